// The Rookery chat page: a public observable room with who's online, plus
// private conversations. Uses only the Scaledrone API from /rookery.js.
//
// Safety rule for this file: names and messages come from other people, so
// they only ever reach the DOM through textContent / attributes set by
// property, never through innerHTML.

const PUBLIC_ROOM = 'observable-room';
const PRIVATE_PREFIX = 'private-room-';
const PUBLIC_KEY = 'public';
const HISTORY_COUNT = 50;
const MAX_KEPT = 500; // messages kept per conversation
const GROUP_WINDOW_S = 300; // consecutive messages within this merge under one header
const NEAR_BOTTOM_PX = 48;
const COLOR_RE = /^#[0-9a-fA-F]{6}$/;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  loginView: $('login-view'),
  loginForm: $('login-form'),
  nameInput: $('name-input'),
  joinButton: $('join-button'),
  loginError: $('login-error'),
  chatView: $('chat-view'),
  sidebar: $('sidebar'),
  peopleToggle: $('people-toggle'),
  peopleUnread: $('people-unread'),
  conversations: $('conversations'),
  members: $('members'),
  memberCount: $('member-count'),
  convTitle: $('conv-title'),
  convSubtitle: $('conv-subtitle'),
  messages: $('messages'),
  jump: $('jump'),
  composer: $('composer'),
  input: $('message-input'),
  send: $('send-button'),
};

const state = {
  drone: null,
  entered: false, // the chat view is showing
  me: { id: null, name: '', color: '#6b7280' },
  myIds: new Set(), // every client id this tab had (it changes on reconnect)
  members: new Map(), // id -> {id, name, color}, current public-room members
  names: new Map(), // id -> {name, color}; outlives members, for history and old conversations
  convs: new Map(), // key -> conversation
  peerConv: new Map(), // peer client id -> conversation key
  active: PUBLIC_KEY,
  privateRoom: null,
  nextConv: 1,
};

/* ------------------------------------------------------------ helpers */

/** Creates an element; `text` goes in via textContent, never as markup. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function safeColor(color) {
  return typeof color === 'string' && COLOR_RE.test(color) ? color : '#6b7280';
}

function shortId(id) {
  return id ? String(id).split(':').pop().slice(0, 6) : 'server';
}

/** Display identity for a client id from the best source we have. */
function identity(id, fallback) {
  const known = state.members.get(id) || state.names.get(id);
  if (known) return known;
  if (fallback && typeof fallback.name === 'string' && fallback.name) {
    return { name: fallback.name, color: safeColor(fallback.color) };
  }
  return { name: id ? `guest ${shortId(id)}` : 'server', color: '#6b7280' };
}

/** A member as the page keeps it, from {id, authData, clientData}. */
function toMember(raw) {
  const data = (raw && (raw.authData || raw.clientData)) || {};
  const name = typeof data.name === 'string' && data.name ? data.name : `guest ${shortId(raw.id)}`;
  return { id: raw.id, name, color: safeColor(data.color) };
}

/** Message text from any payload: our {text}, a plain string, or other JSON. */
function textOf(data) {
  if (typeof data === 'string') return data;
  if (data && typeof data.text === 'string') return data.text;
  try {
    return JSON.stringify(data);
  } catch {
    return String(data);
  }
}

function formatTime(tsSeconds) {
  const d = new Date(tsSeconds * 1000);
  return {
    short: d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }),
    full: d.toLocaleString(),
    iso: d.toISOString(),
  };
}

function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

function decodeTokenData(jwt) {
  try {
    const b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)).data || {};
  } catch {
    return {};
  }
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
  ui.statusText.textContent = STATUS_TEXT[kind];
  const live = kind === 'online';
  ui.members.classList.toggle('stale', state.entered && !live);
}

/* ------------------------------------------------------------- entering */

async function mintToken(clientId, name) {
  const form = new FormData();
  form.append('clientID', clientId);
  if (name) form.append('name', name);
  const res = await fetch('/auth', { method: 'POST', body: form });
  const body = await res.text();
  if (!res.ok) throw new Error(body.trim() || `Sign-in failed (HTTP ${res.status})`);
  // Our own name and colour come from the token the server minted for us.
  const data = decodeTokenData(body);
  if (typeof data.name === 'string') {
    state.me.name = data.name;
    state.me.color = safeColor(data.color);
  }
  return body;
}

function loginFailed(message) {
  ui.loginError.textContent = message;
  ui.joinButton.disabled = false;
  ui.nameInput.disabled = false;
  ui.nameInput.focus();
  setStatus('offline');
}

async function join(name) {
  ui.loginError.textContent = '';
  ui.joinButton.disabled = true;
  ui.nameInput.disabled = true;
  setStatus('connecting');

  let channel;
  try {
    const res = await fetch('/config.json');
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    channel = (await res.json()).channel;
  } catch (err) {
    loginFailed(`Could not load the chat configuration: ${err.message}`);
    return;
  }

  const drone = new Scaledrone(channel, {
    // rookery.js calls this after every (re)connect and before the token
    // expires, so the page never handles tokens itself.
    authenticate: (clientId) => mintToken(clientId, name),
  });
  state.drone = drone;

  drone.on('open', (err) => {
    if (err) return loginFailed(`The server refused the connection: ${err.message}`);
    ui.loginError.textContent = ''; // e.g. an earlier "could not connect, retrying"
    adoptClientId(drone.clientId);
  });
  drone.on('authenticate', (err) => {
    if (!err) return;
    if (!state.entered) {
      // Most likely a name the server does not accept: say why, let the user retry.
      drone.close();
      loginFailed(err.message);
    } else {
      notice(`Could not renew your sign-in: ${err.message}`);
    }
  });
  // Refusals the server sent (err.frame) are labelled as such; the rest are
  // the client's own connection reports.
  drone.on('error', (err) => notice(err.frame ? `The server refused: ${err.message}` : err.message, 'error'));
  drone.on('disconnect', () => {
    setStatus('reconnecting');
    notice('Connection lost. Reconnecting…');
    // Our private room is named after this connection's client id, which
    // the next connection will not have; the new one is joined on reconnect.
    if (state.privateRoom) {
      drone.unsubscribe(state.privateRoom.name);
      state.privateRoom = null;
    }
  });
  drone.on('reconnect', () => adoptClientId(drone.clientId));
  drone.on('close', () => {
    if (state.drone !== drone) return;
    setStatus('offline');
    if (state.entered) notice('You are offline. Reload the page to join again.');
  });

  const room = drone.subscribe(PUBLIC_ROOM, { historyCount: HISTORY_COUNT });
  room.on('open', (err) => {
    if (err && !state.entered) {
      drone.close();
      loginFailed(`Could not join the room: ${err.message}`);
    } else if (err) {
      notice(`Could not rejoin the room: ${err.message}`, 'error');
    }
  });
  room.on('members', (list) => {
    replaceMembers(list);
    if (!state.entered) enterChat();
    setStatus('online');
  });
  room.on('member_join', (raw) => {
    const member = addMember(raw);
    if (!state.myIds.has(member.id)) systemLine(PUBLIC_KEY, `${member.name} joined`);
  });
  room.on('member_leave', (raw) => {
    const member = state.members.get(raw.id) || toMember(raw);
    removeMember(raw.id);
    if (!state.myIds.has(member.id)) systemLine(PUBLIC_KEY, `${member.name} left`);
  });
  room.on('history_message', (msg) => addPublicMessage(msg));
  room.on('message', (msg) => addPublicMessage(msg));
  room.on('resume', ({ recovered }) => {
    if (recovered === false) notice('Some messages sent while you were away could not be recovered.');
  });
}

function adoptClientId(id) {
  state.me.id = id;
  state.myIds.add(id);
  state.names.set(id, { name: state.me.name, color: state.me.color });
  subscribePrivate();
}

function subscribePrivate() {
  const drone = state.drone;
  const name = PRIVATE_PREFIX + drone.clientId;
  if (state.privateRoom && state.privateRoom.name === name) return;
  if (state.privateRoom) drone.unsubscribe(state.privateRoom.name);
  const room = drone.subscribe(name);
  room.on('open', (err) => {
    if (err) notice(`Private messages are unavailable: ${err.message}`, 'error');
  });
  room.on('message', addPrivateMessage);
  state.privateRoom = room;
}

function enterChat() {
  state.entered = true;
  ui.loginView.hidden = true;
  ui.chatView.hidden = false;
  ui.peopleToggle.hidden = false;
  renderAll();
  ui.input.focus();
}

/* -------------------------------------------------------------- members */

function replaceMembers(list) {
  state.members.clear();
  for (const raw of list) addMember(raw, false);
  renderMembers();
  refreshConversationPresence();
}

function addMember(raw, render = true) {
  const member = toMember(raw);
  state.members.set(member.id, member);
  state.names.set(member.id, { name: member.name, color: member.color });
  if (render) {
    renderMembers();
    refreshConversationPresence();
  }
  return member;
}

function removeMember(id) {
  state.members.delete(id);
  renderMembers();
  refreshConversationPresence();
}

/**
 * Keeps private conversations pointing at a live member. Client ids change
 * when someone reconnects, so a conversation whose peer went away follows a
 * member with the same display name who is online now (names are chosen by
 * users and may collide; this is a convenience, not an identity).
 */
function refreshConversationPresence() {
  for (const conv of state.convs.values()) {
    if (conv.kind !== 'dm') continue;
    let online = state.members.has(conv.peerId);
    if (!online) {
      const successor = [...state.members.values()].find(
        (m) => m.name === conv.title && !state.myIds.has(m.id) && !state.peerConv.has(m.id),
      );
      if (successor) {
        state.peerConv.delete(conv.peerId);
        conv.peerId = successor.id;
        state.peerConv.set(successor.id, conv.key);
        online = true;
      }
    }
    if (conv.online !== online) {
      conv.online = online;
      systemLine(conv.key, online ? `${conv.title} is back online` : `${conv.title} went offline`);
    }
  }
  renderConversations();
  if (state.convs.get(state.active)?.kind === 'dm') renderHeader();
}

/* -------------------------------------------------------- conversations */

function conversation(key) {
  return state.convs.get(key);
}

function ensurePublicConversation() {
  if (!state.convs.has(PUBLIC_KEY)) {
    state.convs.set(PUBLIC_KEY, { key: PUBLIC_KEY, kind: 'public', title: '# public', entries: [], unread: 0, online: true });
  }
  return state.convs.get(PUBLIC_KEY);
}

function conversationWith(peerId, fallback) {
  const existing = state.peerConv.get(peerId);
  if (existing) return conversation(existing);
  const who = identity(peerId, fallback);
  const conv = {
    key: `dm${state.nextConv++}`,
    kind: 'dm',
    peerId,
    title: who.name,
    color: who.color,
    entries: [],
    unread: 0,
    online: state.members.has(peerId),
  };
  state.convs.set(conv.key, conv);
  state.peerConv.set(peerId, conv.key);
  return conv;
}

function pushEntry(conv, entry) {
  conv.entries.push(entry);
  if (conv.entries.length > MAX_KEPT) conv.entries.splice(0, conv.entries.length - MAX_KEPT);
  const visible = state.entered && conv.key === state.active;
  if (visible) appendEntry(conv, entry);
  else if (entry.kind === 'msg' && !entry.own && !entry.history) conv.unread++;
  if (!visible) renderConversations();
  updateTitle();
}

/** The conversation entry for a delivered or historical message. */
function messageEntry(msg, who, own) {
  return {
    kind: 'msg',
    id: msg.id,
    from: msg.clientId,
    name: who.name,
    color: who.color,
    text: textOf(msg.data),
    ts: msg.timestamp || nowSeconds(),
    own,
    history: msg.index !== undefined,
  };
}

function addPublicMessage(msg) {
  const conv = ensurePublicConversation();
  const payload = msg.data && typeof msg.data === 'object' ? msg.data : null;
  const member = msg.member ? toMember(msg.member) : null;
  const who = member || identity(msg.clientId, payload);
  if (msg.clientId && !state.names.has(msg.clientId)) state.names.set(msg.clientId, who);
  pushEntry(conv, messageEntry(msg, who, state.myIds.has(msg.clientId)));
}

function addPrivateMessage(msg) {
  const payload = msg.data && typeof msg.data === 'object' ? msg.data : null;
  const conv = conversationWith(msg.clientId, payload);
  pushEntry(conv, messageEntry(msg, identity(msg.clientId, payload), false));
}

function systemLine(key, text, tone) {
  const conv = key === PUBLIC_KEY ? ensurePublicConversation() : conversation(key);
  if (!conv) return;
  pushEntry(conv, { kind: 'sys', text, ts: nowSeconds(), tone });
}

/** A line in whatever conversation the reader is looking at. */
function notice(text, tone) {
  if (!state.entered) {
    if (tone === 'error') ui.loginError.textContent = text;
    return;
  }
  systemLine(state.active, text, tone);
}

function openConversation(key) {
  const conv = conversation(key);
  if (!conv) return;
  state.active = key;
  conv.unread = 0;
  renderAll();
  closeDrawer();
  ui.input.focus();
}

/* ---------------------------------------------------------------- send */

function sendMessage() {
  const text = ui.input.value.trim();
  if (!text) return; // empty messages are not sent
  const conv = conversation(state.active);
  const drone = state.drone;
  if (!conv || !drone) return;
  const message = { text, name: state.me.name, color: state.me.color };

  if (conv.kind === 'public') {
    // The server echoes public messages to us; they are shown then, so
    // everyone sees the same order.
    drone.publish({ room: PUBLIC_ROOM, message }, (err) => {
      if (err) systemLine(PUBLIC_KEY, `Not sent: ${err.message}`, 'error');
    });
  } else {
    if (!conv.online) {
      systemLine(conv.key, `${conv.title} is offline; the message was not sent.`, 'error');
      return;
    }
    // We cannot read the recipient's room, so our own copy is kept here.
    const entry = {
      kind: 'msg', from: state.me.id, name: state.me.name, color: state.me.color,
      text, ts: nowSeconds(), own: true,
    };
    pushEntry(conv, entry);
    drone.publish({ room: PRIVATE_PREFIX + conv.peerId, message }, (err) => {
      if (!err) return;
      entry.failed = true;
      if (state.active === conv.key) renderMessages();
      systemLine(conv.key, `Not delivered: ${err.message}`, 'error');
    });
  }
  ui.input.value = '';
  autosize();
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
  const conv = conversation(state.active) || ensurePublicConversation();
  ui.convTitle.textContent = conv.title;
  if (conv.kind === 'public') {
    ui.convSubtitle.textContent = 'Everyone online can read this';
  } else {
    ui.convSubtitle.textContent = conv.online ? 'Private conversation' : 'Private conversation · offline';
  }
  ui.input.placeholder = conv.kind === 'public' ? 'Message everyone…' : `Message ${conv.title}…`;
}

function dot(color, extra = '') {
  const node = h('span', { class: `dot ${extra}`.trim(), 'aria-hidden': 'true' });
  node.style.setProperty('--c', safeColor(color));
  return node;
}

function badge(count, label) {
  if (!count) return null;
  return h('span', { class: 'badge', text: count > 99 ? '99+' : String(count), title: label });
}

function renderConversations() {
  const items = [];
  for (const conv of state.convs.values()) {
    const current = conv.key === state.active;
    const label = conv.kind === 'public' ? 'public room' : `conversation with ${conv.title}`;
    const button = h('button', {
      type: 'button',
      class: 'conv-button',
      'aria-current': current ? 'true' : undefined,
      'aria-label': conv.unread ? `${label}, ${conv.unread} unread` : label,
      dataset: { key: conv.key },
      onclick: () => openConversation(conv.key),
    },
    conv.kind === 'public' ? h('span', { class: 'hash', text: '#', 'aria-hidden': 'true' }) : dot(conv.color, conv.online ? '' : 'off'),
    h('span', { class: 'label', text: conv.kind === 'public' ? 'public' : conv.title }),
    badge(conv.unread, `${conv.unread} unread`));
    items.push(h('li', { class: conv.kind === 'dm' && !conv.online ? 'offline' : undefined }, button));
  }
  ui.conversations.replaceChildren(...items);
  const unreadTotal = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  ui.peopleUnread.hidden = unreadTotal === 0;
  ui.peopleUnread.textContent = String(unreadTotal);
}

function renderMembers() {
  const members = [...state.members.values()].sort((a, b) => {
    const am = state.myIds.has(a.id);
    const bm = state.myIds.has(b.id);
    if (am !== bm) return am ? -1 : 1;
    return a.name.localeCompare(b.name);
  });
  ui.memberCount.textContent = String(members.length);
  ui.members.replaceChildren(...members.map((m) => {
    const mine = state.myIds.has(m.id);
    const content = [dot(m.color), h('span', { class: 'name', text: m.name })];
    if (mine) {
      content.push(h('span', { class: 'you', text: 'you' }));
      return h('li', { class: 'member me', dataset: { id: m.id } }, h('div', { class: 'member-row' }, ...content));
    }
    const button = h('button', {
      type: 'button',
      class: 'member-row',
      'aria-label': `Message ${m.name} privately`,
      onclick: () => openConversation(conversationWith(m.id, m).key),
    }, ...content);
    return h('li', { class: 'member', dataset: { id: m.id } }, button);
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
  const conv = conversation(state.active) || ensurePublicConversation();
  const nodes = [];
  let prev = null;
  for (const entry of conv.entries) {
    nodes.push(entryNode(entry, prev));
    prev = entry;
  }
  if (!nodes.length) {
    const empty = conv.kind === 'public' ? 'No messages yet. Say hello!' : `This is the start of your conversation with ${conv.title}.`;
    nodes.push(h('li', { class: 'empty', text: empty }));
  }
  ui.messages.replaceChildren(...nodes);
  scrollToBottom();
}

function appendEntry(conv, entry) {
  const follow = isNearBottom() || entry.own;
  ui.messages.querySelector('.empty')?.remove();
  const prev = conv.entries.length > 1 ? conv.entries[conv.entries.length - 2] : null;
  ui.messages.append(entryNode(entry, prev));
  // Keep the DOM in step with the kept entries.
  while (ui.messages.childElementCount > MAX_KEPT) ui.messages.firstElementChild.remove();
  if (follow) scrollToBottom();
  else if (entry.kind === 'msg') ui.jump.hidden = false;
}

function entryNode(entry, prev) {
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
  if (entry.failed) classes.push('failed');
  const avatar = h('span', { class: 'avatar', 'aria-hidden': 'true', text: (entry.name || '?').trim().charAt(0).toUpperCase() || '?' });
  avatar.style.setProperty('--c', safeColor(entry.color));
  const author = h('span', { class: 'author', text: entry.own ? 'You' : entry.name });
  author.style.setProperty('--c', safeColor(entry.color));
  const body = h('div', { class: 'bubble' },
    h('div', { class: 'meta' }, author, timeNode),
    h('p', { class: 'text', text: entry.text }),
    entry.failed ? h('span', { class: 'failed-note', text: 'not delivered' }) : null);
  return h('li', { class: classes.join(' '), dataset: { from: entry.from || '' } }, avatar, body);
}

function updateTitle() {
  const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Rookery chat` : 'Rookery chat';
}

/* ------------------------------------------------------- phone drawer */

function openDrawer() {
  ui.sidebar.classList.add('open');
  ui.peopleToggle.setAttribute('aria-expanded', 'true');
  ui.sidebar.querySelector('button')?.focus();
}

function closeDrawer() {
  if (!ui.sidebar.classList.contains('open')) return;
  ui.sidebar.classList.remove('open');
  ui.peopleToggle.setAttribute('aria-expanded', 'false');
}

/* -------------------------------------------------------------- wiring */

function autosize() {
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
}

ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  if (state.drone && state.drone.state !== 'closed') return;
  join(ui.nameInput.value.trim());
});

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
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && ui.sidebar.classList.contains('open')) {
    closeDrawer();
    ui.peopleToggle.focus();
  }
});

ensurePublicConversation();
ui.nameInput.focus();

// Handy from the devtools console; the page itself does not rely on it.
window.rookeryChat = {
  get drone() { return state.drone; },
  get me() { return { ...state.me }; },
};
