// The push providers a configuration names (config.ts, PushSettings): their
// keys are read from their files here, at start, so a wrong path or a key
// that does not parse stops the server with a clear error instead of failing
// every notification later.
import { readFileSync } from 'node:fs';
import { ConfigError, type PushSettings } from '../config.js';
import type { PushProvider } from './provider.js';
import { WebhookPushProvider } from './webhook.js';
import { ApnsProvider } from './apns.js';
import { FcmProvider } from './fcm.js';

function readKey(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${path} (${(err as Error).message})`);
  }
}

export function pushProviders(settings: PushSettings): PushProvider[] {
  const out: PushProvider[] = [];
  if (settings.webhook) out.push(new WebhookPushProvider({ url: settings.webhook.url, secret: settings.webhook.secret }));
  if (settings.apns) {
    const { keyFile, keyId, teamId, topic, url } = settings.apns;
    out.push(new ApnsProvider({ keyId, teamId, topic, privateKeyPem: readKey(keyFile, 'LONGLINK_APNS_KEY_FILE'), ...(url ? { url } : {}) }));
  }
  if (settings.fcm) {
    let account: unknown;
    try {
      account = JSON.parse(readKey(settings.fcm.serviceAccountFile, 'LONGLINK_FCM_SERVICE_ACCOUNT_FILE'));
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError('LONGLINK_FCM_SERVICE_ACCOUNT_FILE is not JSON (the service account key file Firebase gives)');
    }
    const a = account as Record<string, unknown>;
    if (typeof a.project_id !== 'string' || typeof a.client_email !== 'string' || typeof a.private_key !== 'string') {
      throw new ConfigError('LONGLINK_FCM_SERVICE_ACCOUNT_FILE needs project_id, client_email and private_key');
    }
    out.push(new FcmProvider({
      serviceAccount: { project_id: a.project_id, client_email: a.client_email, private_key: a.private_key, ...(typeof a.token_uri === 'string' ? { token_uri: a.token_uri } : {}) },
      ...(settings.fcm.url ? { url: settings.fcm.url } : {}),
    }));
  }
  return out;
}
