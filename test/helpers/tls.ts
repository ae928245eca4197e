// Certificates made at test time with openssl: a private CA and a server
// certificate it signs for localhost, 127.0.0.1 and ::1, so clients verify the
// server for real (trusting the CA) instead of turning verification off.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificates {
  dir: string;
  /** The CA's certificate (PEM file and text): what a client trusts. */
  caFile: string;
  ca: string;
  /** The server's certificate and key (PEM files), signed by the CA. */
  certFile: string;
  keyFile: string;
  /** Another CA that signed nothing here: trusting it alone must not let a client in. */
  otherCaFile: string;
  otherCa: string;
  /** Config overrides for startTestServer. */
  serverFlags: Record<string, string>;
  /** Env for a `longlink` process. */
  serverEnv: Record<string, string>;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

/** A self-signed CA (P-256: quick to make) valid for two days. */
function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-subj', `/CN=Longlink test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

export function makeTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), 'longlink-tls-'));
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  openssl(dir, [
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost',
  ]);
  writeFileSync(join(dir, 'server.ext'), [
    'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    '',
  ].join('\n'));
  openssl(dir, [
    'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem',
  ]);
  const caFile = join(dir, 'ca.pem');
  const otherCaFile = join(dir, 'other-ca.pem');
  const certFile = join(dir, 'server.pem');
  const keyFile = join(dir, 'server.key');
  return {
    dir,
    caFile,
    ca: readFileSync(caFile, 'utf8'),
    certFile,
    keyFile,
    otherCaFile,
    otherCa: readFileSync(otherCaFile, 'utf8'),
    serverFlags: { 'tls-cert': certFile, 'tls-key': keyFile },
    serverEnv: { LONGLINK_TLS_CERT: certFile, LONGLINK_TLS_KEY: keyFile },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
