// The web chat page served by the server at `/`: dev login, then the chat
// view on the SDK's browser client, over WebSocket to this server's /ws.
import './style.css';
import { createClient, indexedDbStore, type LonglinkClient } from '../client/browser.js';
import { Chat } from './chat.js';
import { adoptOrphans, claimDevice } from './devices.js';
import { byId } from './dom.js';
import { parseMembers } from './members.js';
import { Search } from './search.js';

interface DevToken {
  token: string;
  expires_at_ms: number;
}

const USER_KEY = 'longlink.user';

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
  back: byId<HTMLButtonElement>('back'),
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
  newGroupError: byId('new-group-error'),
  attach: byId<HTMLButtonElement>('attach'),
  file: byId<HTMLInputElement>('composer-file'),
  search: byId<HTMLFormElement>('search'),
  searchQuery: byId<HTMLInputElement>('search-query'),
  searchHits: byId('search-hits'),
  searchMore: byId<HTMLButtonElement>('search-more'),
  searchClose: byId<HTMLButtonElement>('search-close'),
};

let session: { client: LonglinkClient; chat: Chat; search: Search; release: () => void } | undefined;

// ---- the open conversation in the URL ------------------------------------------------
// `#c=<conversation id>`: a reload (or a link) reopens it.

function conversationInUrl(): string | undefined {
  return new URLSearchParams(location.hash.slice(1)).get('c') || undefined;
}

function rememberConversation(id: string | undefined): void {
  const hash = id === undefined ? '' : `#c=${encodeURIComponent(id)}`;
  // Replaced, not pushed: the browser's back button leaves the page as before.
  history.replaceState(history.state, '', `${location.pathname}${location.search}${hash}`);
}

/** A conversation opened or closed: on narrow screens the chat replaces the list (see style.css). */
function conversationChanged(id: string | undefined): void {
  el.chat.classList.toggle('conversation-open', id !== undefined);
  rememberConversation(id);
}

// ---- log in and out ---------------------------------------------------------------------

function showLogin(error = ''): void {
  el.chat.hidden = true;
  el.login.hidden = false;
  el.loginError.textContent = error;
  el.loginUser.focus();
}

async function logIn(userId: string): Promise<void> {
  el.loginError.textContent = '';
  const { device, store, release } = await claimDevice(userId);
  let client: LonglinkClient;
  let chat: Chat;
  try {
    let token = await devToken(userId, device);
    client = createClient({
      url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
      // Called on every (re)connect: a cached token until a minute before it expires.
      token: async () => {
        if (token.expires_at_ms - Date.now() < 60_000) token = await devToken(userId, device);
        return token.token;
      },
      clientVersion: 'longlink-web',
      // Cursors and unsent messages survive a reload: the page syncs from where it was.
      store: indexedDbStore(store),
    });
    el.login.hidden = true;
    el.chat.hidden = false;
    chat = new Chat(client, userId, { onOpen: conversationChanged });
    const search = new Search(client, { titleOf: (id) => chat.conversationTitle(id), openAt: (id, seq) => chat.openAt(id, seq) });
    session = { client, chat, search, release };
    // Whenever connected (the first login, or back after a loss), send what closed tabs of this user left unsent.
    client.on('state', (state) => {
      if (state !== 'online' || session?.chat !== chat) return;
      adoptOrphans(userId, store, (sends) => chat.adopt(sends)).catch((err: unknown) => console.warn('[longlink] adopting closed tabs\' messages failed', err));
    });
    await client.connect();
  } catch (err) {
    session?.chat.dispose();
    session = undefined;
    release();
    throw err;
  }
  sessionStorage.setItem(USER_KEY, userId);
  await chat.refreshConversations();
  const remembered = conversationInUrl();
  if (remembered !== undefined) await chat.reopen(remembered);
}

async function logOut(): Promise<void> {
  sessionStorage.removeItem(USER_KEY);
  const s = session;
  session = undefined;
  s?.chat.dispose();
  s?.search.close();
  el.searchQuery.value = '';
  conversationChanged(undefined);
  try {
    await s?.client.close();
  } finally {
    // Its unsent messages stay in its store, which another tab of the user may adopt from now on.
    s?.release();
  }
  showLogin();
}

function start(userId: string): void {
  logIn(userId).catch((err: unknown) => showLogin(`Could not log in as ${userId}: ${err instanceof Error ? err.message : String(err)}`));
}

// ---- the page's controls --------------------------------------------------------------------

el.loginForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const userId = el.loginUser.value.trim();
  if (userId) start(userId);
});

el.logout.addEventListener('click', () => void logOut());
el.back.addEventListener('click', () => session?.chat.closeConversation());

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
  const download = (e.target as Element).closest<HTMLElement>('[data-download]');
  if (download?.dataset.download) void session?.chat.files.download(download.dataset.download);
  const react = (e.target as Element).closest<HTMLElement>('[data-react]');
  if (react?.dataset.react && react.dataset.emoji) void session?.chat.react(Number(react.dataset.react), react.dataset.emoji);
});

el.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = el.text.value;
  if (text.trim() === '') return;
  session?.chat.send(text);
  el.text.value = '';
});
el.text.addEventListener('input', () => session?.chat.typed());

// A file goes as its own message, with what the composer holds as its caption.
el.attach.addEventListener('click', () => el.file.click());
el.file.addEventListener('change', () => {
  const file = el.file.files?.[0];
  el.file.value = '';
  if (!file || !session) return;
  const caption = el.text.value.trim() === '' ? '' : el.text.value;
  el.text.value = '';
  void session.chat.sendFile(file, caption);
});

el.search.addEventListener('submit', (e) => {
  e.preventDefault();
  void session?.search.run(el.searchQuery.value);
});
el.searchClose.addEventListener('click', () => {
  el.searchQuery.value = '';
  session?.search.close();
});
el.searchMore.addEventListener('click', () => void session?.search.more());
el.searchHits.addEventListener('click', (e) => {
  const hit = (e.target as Element).closest<HTMLElement>('[data-conv]');
  if (hit?.dataset.conv && hit.dataset.seq) void session?.search.pick(hit.dataset.conv, Number(hit.dataset.seq));
});
el.searchHits.addEventListener('keydown', (e) => {
  const hit = (e.target as Element).closest<HTMLElement>('[data-conv]');
  if (e.key === 'Enter' && hit?.dataset.conv && hit.dataset.seq) void session?.search.pick(hit.dataset.conv, Number(hit.dataset.seq));
});

el.newDirect.addEventListener('submit', (e) => {
  e.preventDefault();
  const userId = el.newDirectUser.value.trim();
  if (!userId) return;
  el.newDirectUser.value = '';
  void session?.chat.startDirect(userId);
});

/** Show (or clear, with '') the group form's error, next to the members field. */
function groupError(text: string): void {
  el.newGroupError.textContent = text;
  el.newGroupError.hidden = text === '';
  el.newGroupMembers.setAttribute('aria-invalid', String(text !== ''));
}

el.newGroup.addEventListener('submit', (e) => {
  e.preventDefault();
  const name = el.newGroupName.value.trim();
  if (!name || !session) return;
  const members = parseMembers(el.newGroupMembers.value, session.chat.me);
  if (!members.ok) {
    // Nothing is sent: the user fixes the id named and tries again.
    groupError(members.error);
    el.newGroupMembers.focus();
    return;
  }
  groupError('');
  el.newGroupName.value = '';
  el.newGroupMembers.value = '';
  void session.chat.createGroup(name, members.ids);
});
el.newGroupMembers.addEventListener('input', () => groupError(''));

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') session?.chat.visible();
});

const saved = sessionStorage.getItem(USER_KEY);
if (saved) start(saved);
else showLogin();
