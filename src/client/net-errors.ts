// Why a connection or request failed, in words a user can act on. Node puts
// the reason in `code` (fetch: in `cause`, under "fetch failed"); a server
// certificate from a CA the client does not know gets a hint on trusting it.
import { LonglinkError } from '../protocol/index.js';

/** OpenSSL's codes for a certificate chain that ends at an unknown CA (not expiry or a wrong name: those say so). */
const UNKNOWN_ISSUER = /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF/;

export function failureText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  const code = (err as { code?: unknown }).code;
  let text = err.message;
  if (typeof code === 'string' && !text.includes(code)) text += ` [${code}]`;
  if (cause instanceof Error) return `${text}: ${failureText(cause)}`;
  if (typeof code === 'string' && UNKNOWN_ISSUER.test(code)) {
    text += ' (the server\'s certificate is not from a CA this client trusts: give its CA with the `ca` option or --ca)';
  }
  return text;
}

/** A short reason for a 'state' detail or an error message: a server's refusal by its code name. */
export function describeError(err: unknown): string {
  if (err instanceof LonglinkError) return `${err.codeName}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
