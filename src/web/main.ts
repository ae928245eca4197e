// The web chat page served by the server at `/`: dev login, then the chat
// view on the SDK's browser client, over WebSocket to this server's /ws.
import './style.css';
import { createClient, indexedDbStore, type LonglinkClient } from '../client/browser.js';
import { Chat } from './chat.js';
import { byId, randomId } from './dom.js';

interface DevToken {
  token: string;
  expires_at_ms: number;
}

const USER_KEY = 'longlink.user';
const DEVICE_KEY = 'longlink.device';

/** One device id per tab (kept across reloads), so two tabs do not replace each other's session. */
function deviceId(): string {
  let id = sessionStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = `web-${randomId().slice(0, 8)}`;
    sessionStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

async function devToken(userId: string, device: string): Promise<DevToken> {
  const res = await fetch('/api/v1/dev/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId, device_id: device, platform: 'web' }),
  });
  const body = (await res.json().catch(() => ({}))) as Partial<DevToken> & { error?: { code: string; message: string } };
  if (!res.ok || typeof body.token !== 'string') {
    throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : `the server answered ${res.status}`);
  }
  return { token: body.token, expires_at_ms: body.expires_at_ms ?? Date.now() + 3600_000 };
}

const el = {
  login: byId('login'),
  loginForm: byId<HTMLFormElement>('login-form'),
  loginUser: byId<HTMLInputElement>('login-user'),
  loginError: byId('login-error'),
  chat: byId('chat'),
  logout: byId<HTMLButtonElement>('logout'),
  list: byId('conversations'),
  older: byId<HTMLButtonElement>('older'),
  messages: byId('message-list'),
  composer: byId<HTMLFormElement>('composer'),
  text: byId<HTMLInputElement>('composer-text'),
  newDirect: byId<HTMLFormElement>('new-direct'),
  newDirectUser: byId<HTMLInputElement>('new-direct-user'),
  newGroup: byId<HTMLFormElement>('new-group'),
  newGroupName: byId<HTMLInputElement>('new-group-name'),
  newGroupMembers: byId<HTMLInputElement>('new-group-members'),
};

let session: { client: LonglinkClient; chat: Chat } | undefined;

function showLogin(error = ''): void {
  el.chat.hidden = true;
  el.login.hidden = false;
  el.loginError.textContent = error;
  el.loginUser.focus();
}

async function logIn(userId: string): Promise<void> {
  el.loginError.textContent = '';
  const device = deviceId();
  let token = await devToken(userId, device);
  const client = createClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
    // Called on every (re)connect: a cached token until a minute before it expires.
    token: async () => {
      if (token.expires_at_ms - Date.now() < 60_000) token = await devToken(userId, device);
      return token.token;
    },
    clientVersion: 'longlink-web',
    // Cursors and unsent messages survive a reload: the page syncs from where it was.
    store: indexedDbStore(`longlink:${userId}:${device}`),
  });
  el.login.hidden = true;
  el.chat.hidden = false;
  const chat = new Chat(client, userId);
  session = { client, chat };
  try {
    await client.connect();
  } catch (err) {
    chat.dispose();
    session = undefined;
    throw err;
  }
  sessionStorage.setItem(USER_KEY, userId);
  await chat.refreshConversations();
}

async function logOut(): Promise<void> {
  sessionStorage.removeItem(USER_KEY);
  const s = session;
  session = undefined;
  s?.chat.dispose();
  await s?.client.close();
  showLogin();
}

function start(userId: string): void {
  logIn(userId).catch((err: unknown) => showLogin(`Could not log in as ${userId}: ${err instanceof Error ? err.message : String(err)}`));
}

el.loginForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const userId = el.loginUser.value.trim();
  if (userId) start(userId);
});

el.logout.addEventListener('click', () => void logOut());

el.list.addEventListener('click', (e) => {
  const item = (e.target as Element).closest<HTMLElement>('[data-conv]');
  if (item?.dataset.conv) void session?.chat.openConversation(item.dataset.conv);
});
el.list.addEventListener('keydown', (e) => {
  const item = (e.target as Element).closest<HTMLElement>('[data-conv]');
  if (e.key === 'Enter' && item?.dataset.conv) void session?.chat.openConversation(item.dataset.conv);
});

el.older.addEventListener('click', () => void session?.chat.loadOlder());

el.messages.addEventListener('click', (e) => {
  const button = (e.target as Element).closest<HTMLElement>('[data-recall]');
  if (button?.dataset.recall) void session?.chat.recall(Number(button.dataset.recall));
});

el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = el.text.value;
  if (text.trim() === '') return;
  session?.chat.send(text);
  el.text.value = '';
});
el.text.addEventListener('input', () => session?.chat.typed());

el.newDirect.addEventListener('submit', (e) => {
  e.preventDefault();
  const userId = el.newDirectUser.value.trim();
  if (!userId) return;
  el.newDirectUser.value = '';
  void session?.chat.startDirect(userId);
});

el.newGroup.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = el.newGroupName.value.trim();
  const members = el.newGroupMembers.value.split(/[\s,]+/).filter((m) => m !== '');
  if (!name) return;
  el.newGroupName.value = '';
  el.newGroupMembers.value = '';
  void session?.chat.createGroup(name, members);
});

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') session?.chat.visible();
});

const saved = sessionStorage.getItem(USER_KEY);
if (saved) start(saved);
else showLogin();
