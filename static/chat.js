// The Rookery chat page: the public observable room with who's online, and,
// for members, private conversations that belong to users (PROTOCOL.md §11).
// Uses only the Scaledrone API from /rookery.js plus the account endpoints
// (./chat-account.js). Everything is rendered as text (./chat-dom.js).
//
// Rooms and payloads the page uses (the `chat` policy, policies/chat.toml):
//
//   observable-room   the public room; presence groups connections by
//                     `authData.user` (members) or client id (guests).
//   dm-<a>-<b>        a conversation between users a < b (byte order), with
//                     history: messages to an offline user wait there.
//   inbox-<user>      notices for that user. When you first write in a
//                     conversation (no message of yours in its history), the
//                     page publishes {"type":"conversation","room":"dm-a-b",
//                     "from":"<you>"} to the other user's inbox. Your own inbox
//                     (history 100) therefore lists every conversation the other
//                     side has written in; after a reload the page reopens them
//                     all, plus those cached in localStorage for this username
//                     (a cache for conversations nobody has answered yet; the
//                     server stays the truth). Only the frame's `user` is
//                     trusted: the room is derived from it, never from the body.
//
//   message body      {"text":"…","cid":"<random>"}. `cid` matches the echo of
//                     a message to the entry we showed while sending, and lets
//                     receivers drop a retried duplicate. Who wrote a message
//                     comes only from the frame's `user` / `client_id`.

import {
  h, safeColor, dot, badge, shortId, textOf, formatTime, nowSeconds, decodeTokenData, newCid, GREY,
  initial, paint, inkOn, linkified, cutToFit,
} from './chat-dom.js';
import * as account from './chat-account.js';
import * as groups from './chat-groups.js';

const PUBLIC_ROOM = 'observable-room';
const PUBLIC_KEY = 'public';
const HISTORY_COUNT = 100; // the policy's allowance for every room the page reads
const MAX_KEPT = 500; // messages kept per conversation
const GROUP_WINDOW_S = 300; // consecutive messages within this merge under one header
const NEAR_BOTTOM_PX = 48;
const USERNAME_RE = /^[a-z0-9_]{3,32}$/;
const FLASH_KEY = 'rookery.chat.flash';
const MAX_MESSAGE = 4000; // the composer's maxlength
const COUNTER_FROM = 0.8; // show "n / limit" from this share of a limit on
const COLLAPSE_CHARS = 700; // longer messages (or with more lines) start collapsed
const COLLAPSE_LINES = 12;
const RETURN_GRACE_MS = 60_000; // after a reconnect, people coming back are not news
const CONFIG_RETRY_MS = [1000, 2000, 4000, 8000, 15000];

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  account: $('account'),
  accountName: $('account-name'),
  accountHandle: $('account-handle'),
  logout: $('logout-button'),
  loginView: $('login-view'),
  tabs: [...document.querySelectorAll('[role="tab"]')],
  loginForm: $('login-form'),
  loginError: $('login-error'),
  registerForm: $('register-form'),
  registerError: $('register-error'),
  guestForm: $('guest-form'),
  nameInput: $('name-input'),
  guestError: $('guest-error'),
  chatView: $('chat-view'),
  sidebar: $('sidebar'),
  peopleToggle: $('people-toggle'),
  peopleUnread: $('people-unread'),
  peopleCount: $('people-count'),
  backdrop: $('drawer-backdrop'),
  conversations: $('conversations'),
  newConvForm: $('new-conv-form'),
  newConvInput: $('new-conv-input'),
  newConvError: $('new-conv-error'),
  members: $('members'),
  membersHint: $('members-hint'),
  memberCount: $('member-count'),
  convTitle: $('conv-title'),
  convSubtitle: $('conv-subtitle'),
  messages: $('messages'),
  jump: $('jump'),
  composer: $('composer'),
  input: $('message-input'),
  send: $('send-button'),
  composerNote: $('composer-note'),
};

const state = {
  drone: null,
  entered: false, // the chat view is showing
  live: false, // authenticated on the current connection: publishes go out now
  me: { user: null, name: '', color: GREY, id: null },
  myIds: new Set(), // every client id this tab had (it changes on reconnect)
  presence: new Map(), // client id -> {id, user, name, color}: public-room connections
  names: new Map(), // username -> {name, color}, learned from presence
  guestNames: new Map(), // client id -> {name, color}; outlives presence, for history
  convs: new Map(), // key -> conversation ('public' or the dm room name)
  active: PUBLIC_KEY,
  inbox: null,
  dropped: false, // the connection dropped and the public room has not answered again yet
  returning: null, // person keys present before the drop: their rejoining is not news
  returningTimer: null,
};

/* ------------------------------------------------------------ identity */

const isMember = () => state.me.user !== null;

/** The dm room of two users: `dm-<a>-<b>` with a < b in byte order. */
function dmRoom(a, b) {
  return a < b ? `dm-${a}-${b}` : `dm-${b}-${a}`;
}

/** A presence entry as the page keeps it, from {id, authData, clientData}. */
function toPresence(raw) {
  const data = (raw && raw.authData) || {};
  const user = typeof data.user === 'string' && USERNAME_RE.test(data.user) ? data.user : null;
  const name = typeof data.name === 'string' && data.name ? data.name : (user || `guest ${shortId(raw.id)}`);
  return { id: raw.id, user, name, color: safeColor(data.color) };
}

/** Display name and colour of a member by username. */
function userIdentity(user) {
  return state.names.get(user) || { name: user, color: GREY };
}

/** Who sent a message, from the frame alone: its `user`, else its `client_id`. */
function sender(msg) {
  if (typeof msg.user === 'string') {
    const who = userIdentity(msg.user);
    return { user: msg.user, clientId: msg.clientId, name: who.name, color: who.color };
  }
  const live = msg.member ? toPresence(msg.member) : state.presence.get(msg.clientId);
  const who = live || state.guestNames.get(msg.clientId)
    || { name: msg.clientId ? `guest ${shortId(msg.clientId)}` : 'server', color: GREY };
  return { user: null, clientId: msg.clientId, name: who.name, color: who.color };
}

function isOwn(msg) {
  if (isMember()) return msg.user === state.me.user;
  return typeof msg.user !== 'string' && state.myIds.has(msg.clientId);
}

/** Is any connection of `user` in the public room right now? */
function userOnline(user) {
  for (const p of state.presence.values()) if (p.user === user) return true;
  return false;
}

/* ------------------------------------------------------ connection state */

const STATUS_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  online: 'Online',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};

function setStatus(kind) {
  ui.status.dataset.state = kind;
  // Before any connection there is nothing to report: the login screen has no pill.
  ui.status.hidden = kind === 'idle';
  ui.statusText.textContent = STATUS_TEXT[kind];
  ui.members.classList.toggle('stale', state.entered && kind !== 'online');
}

/* ------------------------------------------------------------ login view */

function showLogin(tab = 'login', message = '') {
  ui.loginView.hidden = false;
  selectTab(tab, false);
  const error = { login: ui.loginError, register: ui.registerError, guest: ui.guestError }[tab];
  error.textContent = message;
  setStatus('idle');
  focusFirst(panelOf(tab));
}

function panelOf(tab) {
  return { login: ui.loginForm, register: ui.registerForm, guest: ui.guestForm }[tab];
}

function selectTab(tab, focusTab) {
  for (const button of ui.tabs) {
    const selected = button.id === `tab-${tab}`;
    button.setAttribute('aria-selected', String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(button.getAttribute('aria-controls')).hidden = !selected;
    if (selected && focusTab) button.focus();
  }
}

function focusFirst(form) {
  form.querySelector('input')?.focus();
}

/** Disables a form while its request runs; returns the function that re-enables it. */
function busy(form) {
  const controls = [...form.elements];
  for (const c of controls) c.disabled = true;
  return () => { for (const c of controls) c.disabled = false; };
}

/** Shows a form error and focuses the field it names (the server names it first). */
function formError(form, errorNode, message) {
  errorNode.textContent = message;
  const field = [...form.querySelectorAll('input')].find((input) => message.toLowerCase().includes(input.name))
    || form.querySelector('input');
  field.setAttribute('aria-invalid', 'true');
  field.focus();
}

function clearInvalid(form) {
  for (const input of form.querySelectorAll('input')) input.removeAttribute('aria-invalid');
}

async function onLogin(event) {
  event.preventDefault();
  const form = ui.loginForm;
  clearInvalid(form);
  ui.loginError.textContent = '';
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    formError(form, ui.loginError, username ? 'Enter your password' : 'Enter your username');
    return;
  }
  const done = busy(form);
  try {
    const me = await account.login(username, password);
    done();
    form.password.value = '';
    startMember(me);
  } catch (err) {
    done();
    const wait = err.retryAfter ? ` Try again in ${Math.ceil(err.retryAfter / 60)} min.` : '';
    ui.loginError.textContent = err.message + wait;
    form.password.select();
    form.password.focus();
  }
}

async function onRegister(event) {
  event.preventDefault();
  const form = ui.registerForm;
  clearInvalid(form);
  ui.registerError.textContent = '';
  const username = form.username.value.trim().toLowerCase();
  const password = form.password.value;
  const name = form.name.value.trim();
  const done = busy(form);
  try {
    const user = await account.register(username, password, name);
    const me = await account.login(user, password);
    done();
    form.password.value = '';
    startMember(me);
  } catch (err) {
    done();
    formError(form, ui.registerError, err.message);
  }
}

function onGuest(event) {
  event.preventDefault();
  if (state.drone && state.drone.state !== 'closed') return;
  ui.guestError.textContent = '';
  state.me = { user: null, name: '', color: GREY, id: null };
  connect(ui.nameInput.value.trim());
}

/** Login and guest failures before the chat view showed. */
function entryFailed(message) {
  const guest = !isMember();
  if (state.drone) state.drone.close();
  state.drone = null;
  for (const form of [ui.loginForm, ui.registerForm, ui.guestForm]) for (const c of form.elements) c.disabled = false;
  showLogin(guest ? 'guest' : 'login', message);
}

/** The session ended under us (expired, logged out elsewhere): start over cleanly. */
function sessionEnded() {
  sessionStorage.setItem(FLASH_KEY, 'Your session has ended. Please log in again.');
  if (state.drone) state.drone.close();
  location.reload();
}

/* ------------------------------------------------------------- connecting */

/**
 * The channel id from /config.json, retried with backoff while it fails (a
 * server restarting, a flaky network: "Failed to fetch" is usually brief).
 * Says so in the entry form, and clears the note once it worked.
 */
async function loadChannel() {
  const errorNode = () => ui[isMember() ? 'loginError' : 'guestError'];
  for (let attempt = 0; ; attempt++) {
    try {
      const channel = await account.channelId();
      if (attempt > 0) errorNode().textContent = '';
      return channel;
    } catch (err) {
      const wait = CONFIG_RETRY_MS[Math.min(attempt, CONFIG_RETRY_MS.length - 1)];
      if (ui.loginView.hidden) showLogin(isMember() ? 'login' : 'guest');
      errorNode().textContent = `Could not load the chat configuration: ${err.message}. Retrying in ${Math.round(wait / 1000)} s…`;
      setStatus('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

function startMember(me) {
  state.me = { user: me.user, name: me.name || me.user, color: GREY, id: null };
  connect(null);
}

async function connect(guestName) {
  // The forms stay disabled (and, after a reload, hidden) until the room answers.
  for (const form of [ui.loginForm, ui.registerForm, ui.guestForm]) for (const c of form.elements) c.disabled = true;
  setStatus('connecting');

  const channel = await loadChannel();

  const drone = new Scaledrone(channel, {
    // rookery.js calls this after every (re)connect and before the token
    // expires, so the page never handles tokens itself.
    authenticate: async (clientId) => {
      const token = await account.mintToken(clientId, guestName);
      const data = decodeTokenData(token);
      if (isMember() && data.user !== state.me.user) {
        // No session any more: /auth answered as for a guest.
        sessionEnded();
        throw new Error('Your session has ended');
      }
      if (typeof data.name === 'string') state.me.name = data.name;
      state.me.color = safeColor(data.color);
      return token;
    },
  });
  state.drone = drone;

  drone.on('open', (err) => {
    if (err) return entryFailed(`The server refused the connection: ${err.message}`);
    adoptClientId(drone.clientId);
  });
  drone.on('reconnect', () => adoptClientId(drone.clientId));
  drone.on('authenticate', (err) => {
    if (!err) {
      state.live = true;
      markQueuedSending();
      return;
    }
    if (err.cause?.status === 401 && isMember()) return sessionEnded();
    if (!state.entered) entryFailed(err.message);
    else notice(`Could not renew your sign-in: ${err.message}`, 'error');
  });
  // Refusals the server sent (err.frame) are labelled as such; the rest are
  // the client's own connection reports.
  drone.on('error', (err) => {
    if (!state.entered && !err.frame) {
      // Not connected yet (the server is unreachable): rookery.js keeps trying.
      ui[isMember() ? 'loginError' : 'guestError'].textContent = err.message;
      setStatus('reconnecting');
      return;
    }
    notice(err.frame ? `The server refused: ${err.message}` : err.message, 'error');
  });
  drone.on('disconnect', () => {
    state.live = false;
    setStatus('reconnecting');
    // The pill says "Reconnecting…"; the log gets one line when we are back.
    // Everyone here now is expected back: their rejoining is not news.
    if (!state.dropped) {
      state.dropped = true;
      clearTimeout(state.returningTimer);
      state.returning = new Set([...(state.returning || []), ...[...state.presence.values()].map(returnKey)]);
    }
  });
  drone.on('close', () => {
    state.live = false;
    if (state.drone !== drone) return;
    setStatus('offline');
    if (state.entered) notice('You are offline. Reload the page to join again.', 'error');
  });

  const room = drone.subscribe(PUBLIC_ROOM, { historyCount: HISTORY_COUNT });
  room.on('open', (err) => {
    if (err && !state.entered) entryFailed(`Could not join the room: ${err.message}`);
    else if (err) notice(`Could not rejoin the room: ${err.message}`, 'error');
  });
  room.on('members', (list) => {
    replacePresence(list);
    if (!state.entered) enterChat();
    setStatus('online');
    if (state.dropped) {
      state.dropped = false;
      for (const p of state.presence.values()) state.returning?.delete(returnKey(p));
      notice('Reconnected.');
      // Whoever has not come back within the grace period is just gone.
      clearTimeout(state.returningTimer);
      state.returningTimer = setTimeout(() => { state.returning = null; }, RETURN_GRACE_MS);
    }
  });
  room.on('member_join', (raw) => {
    const before = personKeys();
    addPresence(raw);
    const p = state.presence.get(raw.id);
    if (!p || before.has(personKey(p)) || isMine(p)) return;
    if (state.returning?.delete(returnKey(p))) return; // back after the drop
    systemLine(PUBLIC_KEY, `${p.name} joined`);
  });
  room.on('member_leave', (raw) => {
    const p = state.presence.get(raw.id) || toPresence(raw);
    removePresence(raw.id);
    if (!personKeys().has(personKey(p)) && !isMine(p)) systemLine(PUBLIC_KEY, `${p.name} left`);
  });
  room.on('history_message', (msg) => receive(publicConversation(), msg, true));
  room.on('message', (msg) => receive(publicConversation(), msg, false));
  room.on('resume', (info) => warnIfMissed(PUBLIC_KEY, info));

  if (isMember()) {
    subscribeInbox();
    groups.start(groupsHost(channel));
    for (const peer of cachedPeers()) ensureDm(peer);
  }
}

/** What ./chat-groups.js uses of the page: it adds conversations of kind 'group'. */
function groupsHost(channel) {
  return {
    channel,
    publicKey: PUBLIC_KEY,
    get drone() { return state.drone; },
    get me() { return state.me; },
    get active() { return state.active; },
    convs: state.convs,
    presence: state.presence,
    newConversation, receive, openConversation, systemLine, notice, renderAll, renderHeader,
    toPresence, learn, userIdentity,
  };
}

function adoptClientId(id) {
  state.me.id = id;
  state.myIds.add(id);
}

function enterChat() {
  state.entered = true;
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.peopleToggle.hidden = false;
  ui.account.hidden = false;
  ui.accountName.textContent = state.me.name;
  ui.accountHandle.textContent = isMember() ? `@${state.me.user}` : 'guest';
  ui.logout.textContent = isMember() ? 'Log out' : 'Leave';
  ui.newConvForm.hidden = !isMember();
  renderAll();
  ui.input.focus();
}

/* ------------------------------------------------------------ the inbox */

function subscribeInbox() {
  const room = state.drone.subscribe(`inbox-${state.me.user}`, { historyCount: HISTORY_COUNT });
  room.on('open', (err) => {
    if (err) notice(`Your inbox is unavailable: ${err.message}`, 'error');
  });
  room.on('history_message', (msg) => onNotice(msg, true));
  room.on('message', (msg) => onNotice(msg, false));
  state.inbox = room;
}

/** A notice in our inbox: someone wrote to us in a conversation. */
function onNotice(msg, fromHistory) {
  const from = msg.user;
  // Only the frame says who wrote it; the room follows from that, whatever the body says.
  if (typeof from !== 'string' || !USERNAME_RE.test(from) || from === state.me.user) return;
  if (!msg.data || msg.data.type !== 'conversation') return;
  // A live notice is news: what the conversation's history holds is unread.
  const conv = ensureDm(from);
  if (!fromHistory && !conv.entries.length) conv.historyIsNew = true;
}

/* ------------------------------------------- conversation list (cache) */

function cacheKey() {
  return `rookery.chat.convs.${state.me.user}`;
}

function cachedPeers() {
  try {
    const list = JSON.parse(localStorage.getItem(cacheKey()) || '[]');
    return Array.isArray(list) ? list.filter((p) => typeof p === 'string' && USERNAME_RE.test(p)) : [];
  } catch {
    return [];
  }
}

function cachePeer(peer) {
  const peers = cachedPeers();
  if (peers.includes(peer)) return;
  peers.push(peer);
  try {
    localStorage.setItem(cacheKey(), JSON.stringify(peers));
  } catch {
    // storage full or disabled: the inbox still restores answered conversations
  }
}

// Another tab of ours opened a conversation: open it here too.
window.addEventListener('storage', (event) => {
  if (!isMember() || !state.drone || event.key !== cacheKey()) return;
  for (const peer of cachedPeers()) ensureDm(peer);
});

/* -------------------------------------------------------------- presence */

const personKey = (p) => (p.user ? `u:${p.user}` : `c:${p.id}`);
// A guest comes back from a dropped connection with a new client id: the
// name is what says it is the same person again.
const returnKey = (p) => (p.user ? `u:${p.user}` : `g:${p.name}`);
const isMine = (p) => (isMember() ? p.user === state.me.user : state.myIds.has(p.id));

function personKeys() {
  return new Set([...state.presence.values()].map(personKey));
}

function learn(p) {
  if (p.user) state.names.set(p.user, { name: p.name, color: p.color });
  else state.guestNames.set(p.id, { name: p.name, color: p.color });
}

function replacePresence(list) {
  const before = onlineUsers();
  state.presence.clear();
  for (const raw of list) {
    const p = toPresence(raw);
    state.presence.set(p.id, p);
    learn(p);
  }
  presenceChanged(before);
}

function addPresence(raw) {
  const before = onlineUsers();
  const p = toPresence(raw);
  state.presence.set(p.id, p);
  learn(p);
  presenceChanged(before);
}

function removePresence(id) {
  const before = onlineUsers();
  state.presence.delete(id);
  presenceChanged(before);
}

function onlineUsers() {
  return new Set([...state.presence.values()].filter((p) => p.user).map((p) => p.user));
}

/** Tells each conversation whose partner came or went (their first tab / last tab). */
function presenceChanged(before) {
  const after = onlineUsers();
  for (const conv of state.convs.values()) {
    if (conv.kind !== 'dm') continue;
    const was = before.has(conv.peer);
    const is = after.has(conv.peer);
    // Around a reconnect, a partner missing from the first list and then
    // rejoining is the same connection drop, not news.
    const returning = state.returning?.has(`u:${conv.peer}`);
    if (was !== is && state.entered && !returning) {
      systemLine(conv.key, is ? `${peerName(conv)} is online` : `${peerName(conv)} went offline`);
    }
  }
  renderMembers();
  renderConversations();
  if (state.entered) renderHeader();
}

/* -------------------------------------------------------- conversations */

function publicConversation() {
  if (!state.convs.has(PUBLIC_KEY)) {
    state.convs.set(PUBLIC_KEY, newConversation(PUBLIC_KEY, 'public', PUBLIC_ROOM, null));
  }
  return state.convs.get(PUBLIC_KEY);
}

function newConversation(key, kind, room, peer) {
  return {
    key, kind, room, peer,
    entries: [],
    unread: 0,
    ids: new Set(), // message ids shown, to drop recovery overlaps
    cids: new Set(), // sender/cid pairs shown, to drop retried duplicates
    noticeSent: false, // the peer's inbox knows about this conversation
    historyIsNew: false, // opened by a live notice: its history counts as unread
  };
}

function peerName(conv) {
  return userIdentity(conv.peer).name;
}

/** The conversation with `peer`, subscribing to its room the first time. */
function ensureDm(peer) {
  const room = dmRoom(state.me.user, peer);
  const existing = state.convs.get(room);
  if (existing) return existing;
  const conv = newConversation(room, 'dm', room, peer);
  state.convs.set(room, conv);
  cachePeer(peer);
  const sub = state.drone.subscribe(room, { historyCount: HISTORY_COUNT });
  sub.on('open', (err) => {
    if (err) systemLine(room, `This conversation is unavailable: ${err.message}`, 'error');
  });
  sub.on('history_message', (msg) => receive(conv, msg, true));
  sub.on('message', (msg) => receive(conv, msg, false));
  sub.on('resume', (info) => warnIfMissed(room, info));
  renderConversations();
  return conv;
}

/** A delivered or stored message in a conversation. */
function receive(conv, msg, fromHistory) {
  if (msg.id) {
    if (conv.ids.has(msg.id)) return;
    conv.ids.add(msg.id);
  }
  const own = isOwn(msg);
  if (own) conv.noticeSent = true; // we wrote here before, so we told the peer then
  const cid = msg.data && typeof msg.data.cid === 'string' ? msg.data.cid : null;
  const who = sender(msg);
  const dedupe = cid ? `${who.user || who.clientId}/${cid}` : null;
  if (own && cid) {
    // The echo of something this tab sent: it is on the server now.
    const pending = conv.entries.find((e) => e.cid === cid && e.status);
    if (pending) {
      pending.id = msg.id;
      pending.ts = msg.timestamp || pending.ts;
      pending.status = 'sent';
      conv.cids.add(dedupe);
      updateEntry(conv, pending);
      return;
    }
  }
  if (dedupe) {
    if (conv.cids.has(dedupe)) return;
    conv.cids.add(dedupe);
  }
  pushEntry(conv, {
    kind: 'msg',
    id: msg.id,
    user: who.user,
    from: who.user ? `u:${who.user}` : `c:${who.clientId}`,
    name: who.name,
    color: who.color,
    text: textOf(msg.data),
    ts: msg.timestamp || nowSeconds(),
    own,
    history: fromHistory,
    cid,
  });
}

function pushEntry(conv, entry) {
  conv.entries.push(entry);
  if (conv.entries.length > MAX_KEPT) conv.entries.splice(0, conv.entries.length - MAX_KEPT);
  const visible = state.entered && conv.key === state.active;
  if (visible) appendEntry(conv, entry);
  else if (entry.kind === 'msg' && !entry.own && (!entry.history || conv.historyIsNew)) conv.unread++;
  if (!visible) renderConversations();
  updateTitle();
}

function systemLine(key, text, tone) {
  const conv = state.convs.get(key);
  if (!conv) return;
  pushEntry(conv, { kind: 'sys', text, ts: nowSeconds(), tone });
}

/**
 * After a resubscribe: rookery.js says `recovered: false` only when it asked
 * to fill a gap (it had seen a message in the room) and the server could not.
 * `true` (all filled, or nothing missed) and `undefined` (nothing seen
 * before, so the initial history was shown again) are not news.
 */
function warnIfMissed(key, { recovered } = {}) {
  if (recovered !== false) return;
  systemLine(key, 'Some messages sent while you were away could not be recovered.', 'warn');
}

/** A line in whatever conversation the reader is looking at. */
function notice(text, tone) {
  if (!state.entered) return;
  systemLine(state.active, text, tone);
}

function openConversation(key, { focus = true } = {}) {
  const conv = state.convs.get(key);
  if (!conv) return;
  state.active = key;
  conv.unread = 0;
  renderAll();
  closeDrawer();
  if (focus) ui.input.focus();
}

function onNewConversation(event) {
  event.preventDefault();
  const peer = ui.newConvInput.value.trim().replace(/^@/, '').toLowerCase();
  ui.newConvError.textContent = '';
  if (!USERNAME_RE.test(peer)) {
    ui.newConvError.textContent = 'A username is 3 to 32 characters of a–z, 0–9 and _.';
    ui.newConvInput.focus();
    return;
  }
  if (peer === state.me.user) {
    ui.newConvError.textContent = 'That is you.';
    ui.newConvInput.focus();
    return;
  }
  ui.newConvInput.value = '';
  openConversation(ensureDm(peer).key);
}

/* ---------------------------------------------------------------- send */

function sendMessage() {
  const text = ui.input.value.trim();
  if (!text) {
    // Empty messages are not sent; only spaces deserve a word of explanation.
    if (ui.input.value) ui.input.limit.say('Nothing to send: the message is only spaces.');
    return;
  }
  const conv = state.convs.get(state.active);
  if (!conv || !state.drone || conv.readOnly) return;
  const entry = {
    kind: 'msg',
    user: state.me.user,
    from: isMember() ? `u:${state.me.user}` : `c:${state.me.id}`,
    name: state.me.name,
    color: state.me.color,
    text,
    ts: nowSeconds(),
    own: true,
    cid: newCid(),
    status: 'sending',
    // Said once, when it matters: the partner is not there to read it now.
    later: conv.kind === 'dm' && !userOnline(conv.peer),
  };
  conv.cids.add(`${state.me.user || state.me.id}/${entry.cid}`);
  publishEntry(conv, entry);
  pushEntry(conv, entry);
  ui.input.value = '';
  ui.input.limit.update();
  autosize();
}

/** Publishes (or re-publishes) one of our entries and tracks its state. */
function publishEntry(conv, entry) {
  const drone = state.drone;
  entry.status = state.live ? 'sending' : 'queued';
  entry.error = undefined;
  if (conv.kind === 'dm' && !conv.noticeSent) {
    // First words of ours here: tell the partner's inbox, so the conversation
    // shows up in all their tabs now and after every reload (theirs and ours,
    // once they answer). Published before the message, so it arrives first.
    conv.noticeSent = true;
    const notice = { type: 'conversation', room: conv.room, from: state.me.user };
    drone.publish({ room: `inbox-${conv.peer}`, message: notice }, (err) => {
      if (err) conv.noticeSent = false;
    });
  }
  // rookery.js keeps publishes made while offline and sends them, in order,
  // once it is connected and authenticated again; the callback says how it went.
  drone.publish({ room: conv.room, message: { text: entry.text, cid: entry.cid } }, (err) => {
    if (entry.status === 'sent') return; // the echo was faster
    if (err) {
      entry.status = 'failed';
      entry.error = err.message;
    } else {
      entry.status = 'sent';
    }
    updateEntry(conv, entry);
  });
}

function retry(conv, entry) {
  publishEntry(conv, entry);
  updateEntry(conv, entry);
  ui.input.focus();
}

/** After reconnecting, queued messages go out: say so. */
function markQueuedSending() {
  for (const conv of state.convs.values()) {
    for (const entry of conv.entries) {
      if (entry.status === 'queued') {
        entry.status = 'sending';
        updateEntry(conv, entry);
      }
    }
  }
}

/* ------------------------------------------------------------ rendering */

function renderAll() {
  renderHeader();
  renderConversations();
  renderMembers();
  renderMessages();
  updateTitle();
}

function renderHeader() {
  const conv = state.convs.get(state.active) || publicConversation();
  for (const control of ui.composer.elements) control.disabled = Boolean(conv.readOnly);
  if (conv.describe) {
    const about = conv.describe();
    ui.convTitle.textContent = about.title;
    ui.convSubtitle.textContent = about.subtitle;
    ui.input.placeholder = about.placeholder;
    return;
  }
  if (conv.kind === 'public') {
    ui.convTitle.textContent = '# public';
    ui.convSubtitle.textContent = 'Everyone online can read this';
    ui.input.placeholder = 'Message everyone…';
    return;
  }
  const name = peerName(conv);
  ui.convTitle.textContent = name;
  ui.convSubtitle.textContent = userOnline(conv.peer)
    ? `@${conv.peer} · online · private conversation`
    : `@${conv.peer} · offline · messages are delivered when ${name} is back`;
  ui.input.placeholder = `Message ${name}…`;
}

function renderConversations() {
  const items = [];
  for (const conv of state.convs.values()) {
    if (conv.kind === 'group') continue; // listed by ./chat-groups.js
    const current = conv.key === state.active;
    const isPublic = conv.kind === 'public';
    const name = isPublic ? 'public' : peerName(conv);
    const online = isPublic || userOnline(conv.peer);
    const label = isPublic ? 'public room' : `conversation with ${name} (@${conv.peer}), ${online ? 'online' : 'offline'}`;
    const button = h('button', {
      type: 'button',
      class: 'conv-button',
      'aria-current': current ? 'true' : undefined,
      'aria-label': conv.unread ? `${label}, ${conv.unread} unread` : label,
      dataset: { key: conv.key, room: conv.room },
      onclick: () => openConversation(conv.key),
    },
    isPublic ? h('span', { class: 'hash', text: '#', 'aria-hidden': 'true' }) : dot(userIdentity(conv.peer).color, !online),
    h('span', { class: 'label', text: name }),
    isPublic ? null : h('span', { class: 'handle', text: `@${conv.peer}`, 'aria-hidden': 'true' }),
    badge(conv.unread, `${conv.unread} unread`));
    items.push(h('li', { class: online ? undefined : 'offline' }, button));
  }
  ui.conversations.replaceChildren(...items);
  const unreadTotal = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  ui.peopleUnread.hidden = unreadTotal === 0;
  ui.peopleUnread.textContent = String(unreadTotal);
  ui.peopleToggle.setAttribute('aria-label', `People, ${people().length} online${unreadLabel()}`);
  groups.render();
}

function unreadLabel() {
  const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  return unread ? `, ${unread} unread` : '';
}

/** One entry per person: a member's tabs together, each guest connection alone. */
function people() {
  const byKey = new Map();
  for (const p of state.presence.values()) {
    const key = personKey(p);
    const person = byKey.get(key);
    if (person) person.tabs++;
    else byKey.set(key, { key, user: p.user, id: p.id, name: p.name, color: p.color, tabs: 1, mine: isMine(p) });
  }
  return [...byKey.values()].sort((a, b) => {
    if (a.mine !== b.mine) return a.mine ? -1 : 1;
    return a.name.localeCompare(b.name) || (a.user || '').localeCompare(b.user || '');
  });
}

function renderMembers() {
  const list = people();
  ui.memberCount.textContent = String(list.length);
  ui.peopleCount.textContent = String(list.length);
  ui.peopleToggle.setAttribute('aria-label', `People, ${list.length} online${unreadLabel()}`);
  ui.membersHint.textContent = isMember()
    ? 'Choose a member to message them privately. Guests have no private conversations.'
    : 'Private conversations are for members: log in or create an account to message someone privately.';
  ui.members.replaceChildren(...list.map((person) => {
    const content = [dot(person.color), h('span', { class: 'name', text: person.name })];
    if (person.user) content.push(h('span', { class: 'handle', text: `@${person.user}` }));
    if (person.tabs > 1) content.push(h('span', { class: 'tag', text: `${person.tabs} tabs` }));
    if (person.mine) content.push(h('span', { class: 'you', text: 'you' }));
    else if (!person.user) content.push(h('span', { class: 'tag', text: 'guest' }));
    const dataset = { user: person.user || '', id: person.id };
    const classes = ['member'];
    if (person.mine) classes.push('me');
    if (!person.user) classes.push('guest');
    if (!person.mine && person.user && isMember()) {
      const button = h('button', {
        type: 'button',
        class: 'member-row',
        'aria-label': `Message ${person.name} (@${person.user}) privately`,
        onclick: () => openConversation(ensureDm(person.user).key),
      }, ...content);
      return h('li', { class: classes.join(' '), dataset }, button);
    }
    return h('li', { class: classes.join(' '), dataset }, h('div', { class: 'member-row' }, ...content));
  }));
}

function isNearBottom() {
  const el = ui.messages;
  return el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
}

function renderMessages() {
  const conv = state.convs.get(state.active) || publicConversation();
  const nodes = [];
  let prev = null;
  for (const entry of conv.entries) {
    nodes.push(entryNode(conv, entry, prev));
    prev = entry;
  }
  if (!nodes.length) {
    const empty = conv.describe ? conv.describe().empty : conv.kind === 'public'
      ? 'No messages yet. Say hello!'
      : `This is the start of your conversation with ${peerName(conv)} (@${conv.peer}).`;
    nodes.push(h('li', { class: 'empty', text: empty }));
  }
  ui.messages.replaceChildren(...nodes);
  scrollToBottom();
}

function appendEntry(conv, entry) {
  const follow = isNearBottom() || entry.own;
  ui.messages.querySelector('.empty')?.remove();
  const prev = conv.entries.length > 1 ? conv.entries[conv.entries.length - 2] : null;
  ui.messages.append(entryNode(conv, entry, prev));
  // Keep the DOM in step with the kept entries.
  while (ui.messages.childElementCount > MAX_KEPT) ui.messages.firstElementChild.remove();
  if (follow) scrollToBottom();
  else if (entry.kind === 'msg') ui.jump.hidden = false;
}

/** Redraws one of our entries whose state changed, if it is on screen. */
function updateEntry(conv, entry) {
  if (!state.entered || conv.key !== state.active) return;
  const index = conv.entries.indexOf(entry);
  if (index < 0) return;
  const node = [...ui.messages.children].find((li) => li.dataset.cid === entry.cid);
  if (!node) return;
  const hadFocus = node.contains(document.activeElement);
  const fresh = entryNode(conv, entry, conv.entries[index - 1] || null);
  node.replaceWith(fresh);
  if (hadFocus) fresh.querySelector('button')?.focus();
}

function statusLine(conv, entry) {
  if (!entry.status) return null;
  const peer = conv.kind === 'dm' ? peerName(conv) : '';
  const later = entry.later ? ` · delivered when ${peer} is back` : '';
  const text = {
    queued: 'Queued · sends when you are back online',
    sending: 'Sending…',
    sent: `Sent${later}`,
    failed: `Not sent${entry.error ? `: ${entry.error}` : ''}`,
  }[entry.status];
  const line = h('p', { class: 'state', text });
  if (entry.status === 'failed') {
    line.append(' ', h('button', {
      type: 'button',
      class: 'retry',
      text: 'Retry',
      'aria-label': `Retry sending “${entry.text.slice(0, 40)}”`,
      onclick: () => retry(conv, entry),
    }));
  }
  return line;
}

function entryNode(conv, entry, prev) {
  const time = formatTime(entry.ts);
  const timeNode = h('time', { datetime: time.iso, title: time.full, text: time.short });
  if (entry.kind === 'sys') {
    return h('li', { class: `sys ${entry.tone || ''}`.trim() }, h('span', { text: entry.text }), timeNode);
  }
  const grouped = prev && prev.kind === 'msg' && prev.from === entry.from && prev.own === entry.own
    && entry.ts - prev.ts < GROUP_WINDOW_S;
  const classes = ['msg'];
  if (entry.own) classes.push('own');
  if (grouped) classes.push('cont');
  if (entry.status === 'failed') classes.push('failed');
  if (entry.status === 'queued' || entry.status === 'sending') classes.push('pending');
  const color = safeColor(entry.color);
  const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true', text: initial(entry.name) });
  avatar.style.setProperty('--c', color);
  avatar.style.setProperty('--ink', inkOn(color));
  const author = paint(h('span', { class: 'author', text: entry.own ? 'You' : entry.name }), color);
  const handle = entry.user && !entry.own ? h('span', { class: 'handle', text: `@${entry.user}` }) : null;
  // A grouped message hides its header from sight only: a screen reader
  // still hears who wrote it and when.
  const meta = h('div', { class: grouped ? 'meta visually-hidden' : 'meta' }, author, handle, timeNode);
  const text = h('p', { class: 'text' }, ...linkified(entry.text));
  const body = h('div', { class: 'bubble' }, meta, text, collapser(entry, text), entry.own ? statusLine(conv, entry) : null);
  return h('li', {
    class: classes.join(' '),
    dataset: { from: entry.from || '', cid: entry.cid || '', status: entry.status || '' },
  }, avatar, body);
}

/** Very long messages start folded, with a button to read them whole. */
function collapser(entry, text) {
  const long = entry.text.length > COLLAPSE_CHARS || entry.text.split('\n').length > COLLAPSE_LINES;
  if (!long) return null;
  text.id = `text-${entry.cid || entry.id || Math.random().toString(36).slice(2)}`.replace(/[^\w-]/g, '_');
  const button = h('button', { type: 'button', class: 'more', 'aria-controls': text.id });
  const show = (expanded) => {
    entry.expanded = expanded;
    text.classList.toggle('collapsed', !expanded);
    button.textContent = expanded ? 'Show less' : 'Show more';
    button.setAttribute('aria-expanded', String(expanded));
  };
  button.addEventListener('click', () => show(!entry.expanded));
  show(Boolean(entry.expanded));
  return button;
}

function updateTitle() {
  const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Rookery chat` : 'Rookery chat';
}

/* ------------------------------------------------------- phone drawer */

function openDrawer() {
  ui.sidebar.classList.add('open');
  ui.backdrop.hidden = false;
  ui.peopleToggle.setAttribute('aria-expanded', 'true');
  ui.sidebar.querySelector('button')?.focus();
}

function closeDrawer() {
  if (!ui.sidebar.classList.contains('open')) return;
  ui.sidebar.classList.remove('open');
  ui.backdrop.hidden = true;
  ui.peopleToggle.setAttribute('aria-expanded', 'false');
}

/* --------------------------------------------------------- text limits */

/**
 * Watches a field with a `maxlength`: a counter once the text nears the
 * limit, and, when a paste does not fit, keeps what fits (never half an
 * emoji) and says that the rest was cut, instead of the browser's silent
 * truncation. `note` is the element the field's notes go in (created after
 * the field when not given). Sets `field.limit = {update, say}`.
 */
function watchLimit(field, note) {
  const max = Number(field.getAttribute('maxlength'));
  if (!note) {
    note = h('p', { class: 'limit-note', id: `${field.id}-limit` });
    field.after(note);
  }
  const counter = h('span', { class: 'counter' });
  const said = h('span', { class: 'said', role: 'status' });
  note.replaceChildren(counter, said);
  const describedBy = (field.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
  if (!describedBy.includes(note.id)) field.setAttribute('aria-describedby', [...describedBy, note.id].join(' '));

  let message = '';
  let ours = false;
  const update = () => {
    const n = field.value.length;
    counter.textContent = n >= max * COUNTER_FROM ? `${n.toLocaleString()} / ${max.toLocaleString()} characters` : '';
    counter.classList.toggle('full', n >= max);
    said.textContent = message;
    note.hidden = !counter.textContent && !message;
    if (field === ui.input) ui.send.disabled = !field.value.trim();
  };
  const say = (text) => {
    message = text;
    update();
  };
  field.addEventListener('input', () => {
    if (!ours) message = '';
    update();
  });
  field.addEventListener('paste', (event) => {
    const pasted = event.clipboardData?.getData('text/plain') || '';
    const start = field.selectionStart ?? field.value.length;
    const end = field.selectionEnd ?? start;
    // What the field takes (an <input> drops line breaks from a paste).
    const incoming = field.tagName === 'INPUT' ? pasted.replace(/\r?\n/g, ' ') : pasted.replace(/\r\n/g, '\n');
    const room = max - (field.value.length - (end - start));
    if (incoming.length <= room) return; // it fits: the browser pastes as usual
    event.preventDefault();
    const kept = cutToFit(incoming, Math.max(room, 0));
    field.setRangeText(kept, start, end, 'end');
    message = `Pasted text was cut: ${kept.length.toLocaleString()} of ${incoming.length.toLocaleString()} characters fit (the limit is ${max.toLocaleString()}).`;
    ours = true;
    field.dispatchEvent(new Event('input', { bubbles: true }));
    ours = false;
  });
  field.limit = { update, say };
  update();
}

/* -------------------------------------------------------------- wiring */

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
}

async function onLogout() {
  ui.logout.disabled = true;
  if (isMember()) {
    try {
      await account.logout();
    } catch (err) {
      ui.logout.disabled = false;
      notice(`Could not log out: ${err.message}`, 'error');
      return;
    }
    // This device no longer remembers whom you talked to.
    try { localStorage.removeItem(cacheKey()); } catch { /* storage disabled */ }
  }
  if (state.drone) state.drone.close();
  state.drone = null;
  location.reload();
}

ui.tabs.forEach((tab, i) => {
  tab.addEventListener('click', () => {
    selectTab(tab.id.slice(4), false);
    focusFirst(panelOf(tab.id.slice(4)));
  });
  tab.addEventListener('keydown', (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step === undefined && event.key !== 'Home' && event.key !== 'End') return;
    event.preventDefault();
    let next = step === undefined ? (event.key === 'Home' ? 0 : ui.tabs.length - 1) : i + step;
    next = (next + ui.tabs.length) % ui.tabs.length;
    selectTab(ui.tabs[next].id.slice(4), true);
  });
});
ui.loginForm.addEventListener('submit', onLogin);
ui.registerForm.addEventListener('submit', onRegister);
ui.guestForm.addEventListener('submit', onGuest);
ui.newConvForm.addEventListener('submit', onNewConversation);
ui.logout.addEventListener('click', onLogout);

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  sendMessage();
});
ui.input.addEventListener('keydown', (event) => {
  // Enter sends; Shift+Enter is a new line; never interrupt an IME composition.
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});
ui.input.addEventListener('input', autosize);
watchLimit(ui.input, ui.composerNote);
for (const field of document.querySelectorAll('#login-view input[maxlength]')) {
  if (field.type !== 'password') watchLimit(field);
}

ui.messages.addEventListener('scroll', () => {
  if (isNearBottom()) ui.jump.hidden = true;
});
ui.jump.addEventListener('click', () => {
  scrollToBottom();
  ui.input.focus();
});

ui.peopleToggle.addEventListener('click', () => {
  if (ui.sidebar.classList.contains('open')) closeDrawer();
  else openDrawer();
});
// A tap outside the drawer (on the backdrop) closes it, as on every phone.
ui.backdrop.addEventListener('click', () => {
  closeDrawer();
  ui.peopleToggle.focus();
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && ui.sidebar.classList.contains('open')) {
    closeDrawer();
    ui.peopleToggle.focus();
  }
});

/** Start: a live session goes straight in (a reload keeps you logged in). */
async function boot() {
  publicConversation();
  const flash = sessionStorage.getItem(FLASH_KEY) || '';
  sessionStorage.removeItem(FLASH_KEY);
  setStatus('connecting');
  let me = null;
  try {
    me = await account.whoAmI();
  } catch (err) {
    showLogin('login', err.message);
    return;
  }
  if (me) startMember(me);
  else showLogin('login', flash);
}

boot();

// Handy from the devtools console and for tests; the page itself does not rely on it.
window.rookeryChat = {
  get drone() { return state.drone; },
  get me() { return { ...state.me }; },
};
