// Reading an upload's body: the raw bytes (not a form), refused as soon as
// they pass the limit — before any byte when Content-Length says so — so a
// client cannot make the server hold more than the limit. Also the id a new
// file gets and the name it is kept under.
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export class UploadError extends Error {
  constructor(readonly code: 'FILE_TOO_LARGE' | 'FILE_EMPTY' | 'UPLOAD_ABORTED', message: string) {
    super(message);
    this.name = 'UploadError';
  }
}

export async function readUpload(req: IncomingMessage, maxBytes: number): Promise<{ bytes: Buffer; sha256: string }> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > maxBytes) throw tooLarge(req, maxBytes);
  const chunks: Buffer[] = [];
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of req) {
      const c = chunk as Buffer;
      size += c.length;
      if (size > maxBytes) throw tooLarge(req, maxBytes);
      hash.update(c);
      chunks.push(c);
    }
  } catch (err) {
    if (err instanceof UploadError) throw err;
    throw new UploadError('UPLOAD_ABORTED', 'the upload was cut off');
  }
  if (!req.complete) throw new UploadError('UPLOAD_ABORTED', 'the upload was cut off');
  if (size === 0) throw new UploadError('FILE_EMPTY', 'the body is empty: send the file\'s bytes');
  return { bytes: Buffer.concat(chunks, size), sha256: hash.digest('hex') };
}

/** The refusal; the rest of the body is not read (the caller closes the connection after its answer). */
function tooLarge(req: IncomingMessage, maxBytes: number): UploadError {
  req.pause();
  return new UploadError('FILE_TOO_LARGE', `the file is over ${maxBytes} bytes`);
}

/** A new file's id: 16 random bytes, base64url (22 characters). */
export function newFileId(): string {
  return randomBytes(16).toString('base64url');
}

/** The name a file is kept under: no path, no control characters, at most 255 characters ('file' when nothing is left). */
export function cleanFileName(name: string | undefined): string {
  let decoded = name ?? '';
  try {
    decoded = decodeURIComponent(decoded);
  } catch {
    // not percent-encoded: as given
  }
  const base = decoded.split(/[/\\]/).pop() ?? '';
  // eslint-disable-next-line no-control-regex
  const clean = [...base.replace(/[\u0000-\u001f\u007f-\u009f]/g, '').trim()].slice(0, 255).join('');
  return clean === '' || clean === '.' || clean === '..' ? 'file' : clean;
}
