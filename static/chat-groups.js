// Group rooms on the chat page (PROTOCOL.md §11.1): create a group, list
// your groups with unread counts and who is online in each, read and write
// in them, add and remove members, leave; react live when you are added or
// removed. The page core (./chat.js) owns conversations, messages and the
// composer; this module adds conversations of kind 'group' to it through the
// `host` object it is started with, and draws the Groups sidebar section, the
// group header actions and two dialogs (new group, members).
//
// The truth is the server: `GET /api/{c}/groups` says which groups you are
// in. Everything else is a hint to ask again:
//   - inbox-<user> frames {"type":"group_added"|"group_removed","group"}
//     count only when the server published them (no client_id, no user);
//     then the page fetches a fresh token (it carries the group's rule),
//     authenticates again on the same socket and re-reads the list;
//   - an uncorrelated {"error":"Unauthorized","room":"observable-group-<id>"}
//     means the server took the room from us: we were removed, so the group
//     turns read-only at once and no new message can reach it.
//
// Group room: observable-group-<id> (presence + history 100). A group's
// conversation key is its room name, like a dm's.

import { h, dot, badge } from './chat-dom.js';
import { mintToken } from './chat-account.js';

const ROOM_PREFIX = 'observable-group-';
const ID_RE = /^[a-z0-9_]{1,32}$/;
const USERNAME_RE = /^[a-z0-9_]{3,32}$/;
const HISTORY_COUNT = 100; // the chat policy's allowance for group rooms
const MAX_TITLE_CHARS = 64; // the server's default `[groups] max_title_chars`

/** The page core, given to `start`. See `groupsHost` in ./chat.js. */
let host = null;
/** id -> group: {id, title, members, creator, room, presence, state, conv, sub, ...}. */
const groups = new Map();
/** Group work (token refreshes, list reads) runs one step at a time, in order. */
let work = Promise.resolve();
const ui = {};

/* ------------------------------------------------------------ the API */

/** Calls `/api/{c}/groups…` with the session cookie; rejects with the server's message. */
async function api(method, path = '', body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    init.headers = { 'Content-Type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`/api/${encodeURIComponent(host.channel)}/groups${path}`, init);
  if (!res.ok) {
    let message = '';
    try {
      const parsed = await res.json();
      if (parsed && typeof parsed.message === 'string') message = parsed.message;
    } catch {
      // not JSON: fall back to the status
    }
    const err = new Error(message || `The server answered HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return res.status === 204 ? null : res.json();
}

/** A group from the server, checked field by field (it is data from other people). */
function parseGroup(raw) {
  if (!raw || typeof raw.id !== 'string' || !ID_RE.test(raw.id)) return null;
  const title = typeof raw.title === 'string' && raw.title.trim() ? raw.title : raw.id;
  const members = Array.isArray(raw.members) ? raw.members.filter((m) => typeof m === 'string' && USERNAME_RE.test(m)) : [];
  // The server names the creator; a group an operator made has none, and
  // then only the operator removes others.
  const creator = typeof raw.creator === 'string' ? raw.creator : null;
  return { id: raw.id, title, members, creator };
}

/* ------------------------------------------------------------- start */

/** Starts group support for a logged-in member; called once per page by ./chat.js. */
export function start(pageHost) {
  host = pageHost;
  buildSection();
  ui.section.hidden = false;
  // The same Room as the page's own inbox subscription (rookery.js returns
  // the existing one), with our listeners beside the page's.
  const inbox = host.drone.subscribe(`inbox-${host.me.user}`, { historyCount: HISTORY_COUNT });
  inbox.on('message', onInbox);
  // After a reconnect rookery.js authenticates with a fresh token; what
  // changed while we were away shows in the list.
  host.drone.on('reconnect', () => enqueue(refresh));
  enqueue(refresh);
}

/** A list read soon, unless one is already waiting its turn. */
let refreshWaiting = false;
function requestRefresh() {
  if (refreshWaiting) return;
  refreshWaiting = true;
  enqueue(() => {
    refreshWaiting = false;
    return refresh();
  });
}

function enqueue(step) {
  work = work.then(step).catch((err) => host.notice(`Groups: ${err.message}`, 'error'));
  return work;
}

/** A frame in our inbox. Only the server's (no client_id, no user) count. */
function onInbox(msg) {
  if (msg.clientId !== undefined && msg.clientId !== null) return;
  if (msg.user !== undefined) return;
  const data = msg.data;
  if (!data || typeof data !== 'object' || typeof data.group !== 'string' || !ID_RE.test(data.group)) return;
  if (data.type === 'group_added') {
    const known = groups.get(data.group);
    if (known && known.state !== 'removed') return; // already joining or in it (we created it)
    enqueue(async () => {
      await reauthenticate();
      await refresh({ announce: true });
    });
  } else if (data.type === 'group_removed') {
    enqueue(refresh);
  }
}

/**
 * Mints a token (it lists our groups now) and presents it on the current
 * socket. When the socket is down there is nothing to do: the reconnect
 * authenticates with a fresh token anyway.
 */
async function reauthenticate() {
  const drone = host.drone;
  if (!drone || drone.state !== 'open' || !drone.clientId) return;
  const token = await mintToken(drone.clientId);
  await new Promise((resolve, reject) => {
    drone.authenticate(token, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Re-reads our groups and brings the page in line: new groups appear and are
 * joined, groups we are no longer in turn read-only, titles and members update.
 */
async function refresh({ announce = false } = {}) {
  const list = await api('GET');
  if (!Array.isArray(list)) return;
  const listed = new Set();
  for (const raw of list) {
    const fresh = parseGroup(raw);
    if (!fresh) continue;
    listed.add(fresh.id);
    const group = upsert(fresh, { announce });
    if (group.state === 'pending' || group.state === 'removed' || group.state === 'refused') join(group);
  }
  for (const group of groups.values()) {
    if (!listed.has(group.id) && group.state !== 'removed') removed(group);
  }
  render();
}

/** Adds or updates a known group; new ones get a conversation. */
function upsert(fresh, { announce = false } = {}) {
  let group = groups.get(fresh.id);
  if (!group) {
    const room = `${ROOM_PREFIX}${fresh.id}`;
    const conv = host.convs.get(room) || host.newConversation(room, 'group', room, null);
    group = { id: fresh.id, room, conv, sub: null, presence: new Map(), state: 'pending', retried: false, leaving: false };
    conv.readOnly = true; // until the room is joined
    conv.describe = () => describe(group);
    // Added while we watch: what the group already said is news to us.
    conv.historyIsNew = announce;
    host.convs.set(room, conv);
    groups.set(fresh.id, group);
  }
  group.title = fresh.title;
  group.members = fresh.members;
  group.creator = fresh.creator;
  return group;
}

/* ------------------------------------------------------- the group room */

function join(group) {
  const drone = host.drone;
  if (group.state === 'removed') {
    host.systemLine(group.conv.key, `You were added to ${group.title} again`);
  }
  group.presence.clear();
  setState(group, 'joining');
  const sub = drone.subscribe(group.room, { historyCount: HISTORY_COUNT });
  group.sub = sub;
  sub.on('open', (err) => {
    if (group.sub !== sub) return;
    if (err) {
      refused(group, err);
      return;
    }
    group.retried = false;
    setState(group, 'live');
    // The composer was disabled while joining: give it back to a reader who is here.
    if (host.active === group.conv.key && document.activeElement === document.body) {
      document.getElementById('message-input')?.focus();
    }
  });
  // The server dropped the room under us (removal), or refused it on a resubscribe.
  sub.on('error', (err) => {
    if (group.sub === sub) refused(group, err);
  });
  sub.on('members', (list) => {
    group.presence.clear();
    for (const raw of list) addPresence(group, raw);
    presenceChanged(group);
  });
  sub.on('member_join', (raw) => {
    addPresence(group, raw);
    presenceChanged(group);
  });
  sub.on('member_leave', (raw) => {
    group.presence.delete(raw.id);
    presenceChanged(group);
  });
  sub.on('history_message', (msg) => host.receive(group.conv, msg, true));
  sub.on('message', (msg) => host.receive(group.conv, msg, false));
}

/**
 * Moves a group to `state`: pending (known, not joined), joining, live,
 * refused or removed. Only a live group takes messages: before that our
 * token may not list the room yet, after it the server no longer lets us in.
 */
function setState(group, state) {
  group.state = state;
  group.conv.readOnly = state !== 'live';
  if (host.active === group.conv.key) host.renderHeader();
  render();
}

/** Leaves the room on our side, so rookery.js forgets it (no resubscribe on reconnect). */
function dropRoom(group) {
  const sub = group.sub;
  group.sub = null;
  group.presence.clear();
  if (sub) host.drone.unsubscribe(sub.name);
}

/** The server refused or took the group room. */
function refused(group, err) {
  const wasLive = group.state === 'live';
  dropRoom(group);
  if (group.leaving) return; // our own leave: the DELETE answer tidies up
  if (wasLive) {
    // Taken from us while we were in it: only a removal does that.
    removed(group);
    enqueue(refresh); // confirms it (and picks up anything else that changed)
    return;
  }
  if (!group.retried) {
    // Refused on the way in: our token may predate the membership.
    group.retried = true;
    setState(group, 'refused');
    enqueue(async () => {
      await reauthenticate();
      await refresh();
    });
    return;
  }
  setState(group, 'refused');
  host.systemLine(group.conv.key, `This group is unavailable: ${err.message}`, 'error');
}

/** We are no longer a member: the conversation stays, read-only, with no new messages. */
function removed(group) {
  dropRoom(group);
  setState(group, 'removed');
  host.systemLine(group.conv.key, `You were removed from ${group.title}`, 'error');
  if (ui.membersDialog?.open && ui.membersDialog.dataset.group === group.id) ui.membersDialog.close();
}

/** Forgets a group on this page (after leaving it, or dismissing a removed one). */
function forget(group) {
  dropRoom(group);
  groups.delete(group.id);
  host.convs.delete(group.conv.key);
  if (host.active === group.conv.key) host.openConversation(host.publicKey, { focus: false });
  else host.renderAll();
}

function afterChange(group) {
  if (host.active === group.conv.key) host.renderAll();
  else render();
}

function addPresence(group, raw) {
  const p = host.toPresence(raw);
  if (!p.user) return; // group rooms are for members; a guest cannot be here
  group.presence.set(p.id, p);
  host.learn(p);
}

function presenceChanged(group) {
  // Someone we do not list is here: they were added by another member.
  const unknown = [...group.presence.values()].some((p) => !group.members.includes(p.user));
  if (unknown) requestRefresh();
  if (host.active === group.conv.key) host.renderHeader();
  render();
  if (ui.membersDialog?.open && ui.membersDialog.dataset.group === group.id) renderMembersDialog(group);
}

/** Usernames online in the group room, one per person however many tabs. */
function onlineUsers(group) {
  return new Set([...group.presence.values()].map((p) => p.user));
}

/* ----------------------------------------------------------- describing */

const nameOf = (user) => host.userIdentity(user).name;
const isCreator = (group) => group.creator === host.me.user;

/** What the page's header and empty log say for a group (used by ./chat.js). */
function describe(group) {
  const online = [...onlineUsers(group)].map(nameOf).sort((a, b) => a.localeCompare(b));
  const count = group.members.length;
  const members = `${count} ${count === 1 ? 'member' : 'members'}`;
  let subtitle;
  if (group.state === 'removed') subtitle = `You are no longer a member · read-only`;
  else if (group.state === 'refused') subtitle = 'Unavailable · read-only';
  else if (group.state !== 'live') subtitle = `${members} · joining…`;
  else subtitle = `${members} · ${online.length} online: ${online.join(', ')}`;
  return {
    title: group.title,
    subtitle,
    placeholder: {
      live: `Message ${group.title}…`,
      pending: 'Joining…',
      joining: 'Joining…',
    }[group.state] || 'You can no longer write here',
    empty: `This is the start of ${group.title}.`,
  };
}

/* ------------------------------------------------------------ rendering */

/** Redraws the Groups section and the header actions; ./chat.js calls it with its own lists. */
export function render() {
  if (!host || !ui.section) return;
  const list = [...groups.values()].sort((a, b) => a.title.localeCompare(b.title) || a.id.localeCompare(b.id));
  ui.count.textContent = String(list.length);
  ui.list.replaceChildren(...list.map(groupItem));
  ui.empty.hidden = list.length > 0;
  renderActions();
}

function groupItem(group) {
  const conv = group.conv;
  const current = host.active === conv.key;
  const online = onlineUsers(group).size;
  const gone = group.state === 'removed' || group.state === 'refused';
  const detail = gone ? (group.state === 'removed' ? 'removed' : 'unavailable') : `${online} online`;
  let label = `group ${group.title}, ${group.members.length} members, ${detail}`;
  if (conv.unread) label += `, ${conv.unread} unread`;
  const button = h('button', {
    type: 'button',
    class: 'conv-button group-button',
    'aria-current': current ? 'true' : undefined,
    'aria-label': label,
    dataset: { group: group.id, room: group.room, state: group.state },
    onclick: () => host.openConversation(conv.key),
  },
  h('span', { class: 'group-mark', 'aria-hidden': 'true', text: (group.title.trim().charAt(0) || '#').toUpperCase() }),
  h('span', { class: 'label', text: group.title }),
  h('span', { class: gone ? 'group-online gone' : 'group-online', text: detail, 'aria-hidden': 'true' }),
  badge(conv.unread, `${conv.unread} unread`));
  return h('li', { class: gone ? 'offline' : undefined }, button);
}

/** The buttons beside the title of an open group. */
function renderActions() {
  const group = activeGroup();
  if (!group) {
    ui.actions.replaceChildren();
    return;
  }
  const buttons = [];
  if (group.state === 'removed' || group.state === 'refused') {
    buttons.push(h('button', {
      type: 'button', class: 'ghost', text: 'Remove from list',
      'aria-label': `Remove ${group.title} from your list`,
      onclick: () => forget(group),
    }));
  } else {
    buttons.push(h('button', {
      type: 'button', class: 'ghost', text: `Members (${group.members.length})`,
      'aria-label': `Members of ${group.title}: add, remove or leave`,
      'aria-haspopup': 'dialog',
      onclick: () => openMembersDialog(group),
    }));
  }
  ui.actions.replaceChildren(...buttons);
}

function activeGroup() {
  for (const group of groups.values()) if (group.conv.key === host.active) return group;
  return null;
}

/* ------------------------------------------------------------ the section */

function buildSection() {
  ui.section = document.getElementById('groups-section');
  ui.actions = document.getElementById('conv-actions');
  ui.count = h('span', { class: 'count', text: '0' });
  ui.list = h('ul', { id: 'groups', class: 'conversations groups' });
  ui.empty = h('p', { class: 'hint small', text: 'No groups yet. Start one to talk with several members at once.' });
  const create = h('button', {
    type: 'button', class: 'ghost new-group', text: 'New group', 'aria-haspopup': 'dialog',
    onclick: openCreateDialog,
  });
  ui.section.replaceChildren(
    h('div', { class: 'groups-head' }, h('h2', { id: 'groups-heading' }, 'Groups ', ui.count), create),
    ui.list,
    ui.empty,
  );
  buildCreateDialog();
  buildMembersDialog();
}

/* ------------------------------------------------------- creating groups */

/** Members we can suggest: who is online, whom we talk to, who shares a group with us. */
function knownUsers() {
  const users = new Set();
  for (const p of host.presence.values()) if (p.user) users.add(p.user);
  for (const conv of host.convs.values()) if (conv.kind === 'dm' && conv.peer) users.add(conv.peer);
  for (const group of groups.values()) {
    for (const m of group.members) users.add(m);
    for (const p of group.presence.values()) users.add(p.user);
  }
  users.delete(host.me.user);
  return [...users].sort((a, b) => nameOf(a).localeCompare(nameOf(b)) || a.localeCompare(b));
}

/** A group id from a title: lower case a–z, 0–9 and _, at most 32. */
function idFromTitle(title) {
  return title.toLowerCase().normalize('NFKD').replace(/[\u0300-\u036f]/g, '')
    .replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, 32).replace(/_+$/, '');
}

function field(id, labelText, input, hintText) {
  const hint = hintText ? h('p', { id: `${id}-hint`, class: 'hint small-inline', text: hintText }) : null;
  if (hint) input.setAttribute('aria-describedby', `${id}-hint ${input.getAttribute('aria-describedby') || ''}`.trim());
  return [h('label', { for: id, text: labelText }), input, hint];
}

function buildCreateDialog() {
  const title = h('input', {
    id: 'group-title', name: 'title', type: 'text', maxlength: String(MAX_TITLE_CHARS), required: true,
    autocomplete: 'off', 'aria-describedby': 'group-create-error',
  });
  const id = h('input', {
    id: 'group-id', name: 'id', type: 'text', maxlength: '32', autocapitalize: 'none', spellcheck: 'false',
    autocomplete: 'off', 'aria-describedby': 'group-create-error',
  });
  const others = h('input', {
    id: 'group-others', name: 'members', type: 'text', autocapitalize: 'none', spellcheck: 'false',
    autocomplete: 'off', placeholder: 'e.g. bob, carol', 'aria-describedby': 'group-create-error',
  });
  const picks = h('div', { class: 'group-picks' });
  const error = h('p', { id: 'group-create-error', class: 'form-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'primary', text: 'Create group' });
  const cancel = h('button', { type: 'button', class: 'ghost', text: 'Cancel', onclick: () => dialog.close() });
  // The id follows the title until someone types their own.
  title.addEventListener('input', () => {
    if (!id.dataset.edited) id.value = idFromTitle(title.value);
  });
  id.addEventListener('input', () => { id.dataset.edited = id.value ? 'yes' : ''; });
  const form = h('form', { class: 'group-form', novalidate: true, onsubmit: (event) => onCreate(event) },
    h('h2', { id: 'group-create-heading', text: 'New group' }),
    ...field('group-title', 'Title', title),
    ...field('group-id', 'Group id', id, 'a–z, 0–9 and _, up to 32 characters; made from the title unless you change it.'),
    h('fieldset', { class: 'group-members-pick' },
      h('legend', { text: 'Members' }),
      picks,
      ...field('group-others', 'More members by username', others, 'Separate usernames with spaces or commas.')),
    error,
    h('div', { class: 'group-buttons' }, cancel, submit));
  const dialog = h('dialog', { id: 'group-create', class: 'group-dialog', 'aria-labelledby': 'group-create-heading' }, form);
  document.body.append(dialog);
  Object.assign(ui, { createDialog: dialog, createForm: form, createTitle: title, createId: id, createOthers: others, createPicks: picks, createError: error });
}

function openCreateDialog() {
  const { createForm: form, createId: id, createPicks: picks } = ui;
  form.reset();
  delete id.dataset.edited;
  ui.createError.textContent = '';
  for (const input of form.querySelectorAll('input')) input.removeAttribute('aria-invalid');
  const users = knownUsers();
  const online = new Set([...host.presence.values()].map((p) => p.user));
  picks.replaceChildren(...(users.length ? users.map((user) => {
    const box = h('input', { type: 'checkbox', id: `group-pick-${user}`, value: user });
    const text = `${nameOf(user)} (@${user})${online.has(user) ? ' · online' : ''}`;
    return h('div', { class: 'group-pick' }, box, h('label', { for: box.id, text }));
  }) : [h('p', { class: 'hint small-inline', text: 'Nobody to suggest yet: type usernames below.' })]));
  ui.createDialog.showModal();
  ui.createTitle.focus();
}

function createError(message, input) {
  ui.createError.textContent = message;
  for (const el of ui.createForm.querySelectorAll('input')) el.removeAttribute('aria-invalid');
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
}

async function onCreate(event) {
  event.preventDefault();
  const title = ui.createTitle.value.trim();
  const id = ui.createId.value.trim() || idFromTitle(title);
  if (!title) return createError('Give the group a title.', ui.createTitle);
  if (!ID_RE.test(id)) return createError('A group id is 1 to 32 characters of a–z, 0–9 and _.', ui.createId);
  const members = [...ui.createPicks.querySelectorAll('input:checked')].map((box) => box.value);
  for (const word of ui.createOthers.value.split(/[\s,]+/)) {
    const user = word.replace(/^@/, '').toLowerCase();
    if (!user) continue;
    if (!USERNAME_RE.test(user)) return createError(`“${word}” is not a username: 3 to 32 characters of a–z, 0–9 and _.`, ui.createOthers);
    if (user !== host.me.user && !members.includes(user)) members.push(user);
  }
  const controls = [...ui.createForm.elements];
  for (const c of controls) c.disabled = true;
  let created;
  try {
    created = parseGroup(await api('POST', '', { id, title, members }));
  } catch (err) {
    for (const c of controls) c.disabled = false;
    const text = err.message;
    const lower = text.toLowerCase();
    const target = err.status === 409 || lower.includes(' id') ? ui.createId
      : lower.includes('title') ? ui.createTitle
      : ui.createOthers;
    createError(text, target);
    return;
  }
  for (const c of controls) c.disabled = false;
  ui.createDialog.close();
  if (!created) return;
  const group = upsert({ ...created, creator: host.me.user });
  host.openConversation(group.conv.key);
  // Our token predates the group: get one that lists it, then join.
  enqueue(async () => {
    await reauthenticate();
    if (groups.get(group.id) === group && group.state === 'pending') join(group);
  });
}

/* ------------------------------------------------------ members dialog */

function buildMembersDialog() {
  const heading = h('h2', { id: 'group-members-heading' });
  const list = h('ul', { class: 'group-member-list', 'aria-labelledby': 'group-members-heading' });
  const input = h('input', {
    id: 'group-add-input', name: 'user', type: 'text', maxlength: '32', autocapitalize: 'none',
    spellcheck: 'false', autocomplete: 'off', list: 'group-add-suggestions', placeholder: 'username',
    'aria-describedby': 'group-add-error',
  });
  const suggestions = h('datalist', { id: 'group-add-suggestions' });
  const error = h('p', { id: 'group-add-error', class: 'form-error', role: 'alert' });
  const addForm = h('form', { class: 'group-add', novalidate: true, onsubmit: (event) => onAdd(event) },
    h('label', { for: input.id, text: 'Add a member by username' }),
    h('div', { class: 'group-add-row' }, input, h('button', { type: 'submit', class: 'primary', text: 'Add' })),
    suggestions,
    error);
  const leave = h('button', { type: 'button', class: 'ghost danger', text: 'Leave group', onclick: () => onLeave() });
  const close = h('button', { type: 'button', class: 'ghost', text: 'Close', onclick: () => dialog.close() });
  const dialog = h('dialog', { id: 'group-members', class: 'group-dialog', 'aria-labelledby': 'group-members-heading' },
    heading, list, addForm, h('div', { class: 'group-buttons' }, leave, close));
  document.body.append(dialog);
  Object.assign(ui, { membersDialog: dialog, membersHeading: heading, membersList: list, addInput: input, addError: error, addSuggestions: suggestions, leave });
}

function openMembersDialog(group) {
  ui.membersDialog.dataset.group = group.id;
  ui.addInput.value = '';
  ui.addError.textContent = '';
  renderMembersDialog(group);
  ui.membersDialog.showModal();
  ui.addInput.focus();
  // Other members may have added people since we last looked.
  enqueue(refresh).then(() => {
    if (ui.membersDialog.open && groups.get(group.id) === group) renderMembersDialog(group);
  });
}

function renderMembersDialog(group) {
  ui.membersHeading.textContent = `Members of ${group.title}`;
  const online = onlineUsers(group);
  const creator = isCreator(group);
  const members = [...group.members].sort((a, b) => {
    if ((a === host.me.user) !== (b === host.me.user)) return a === host.me.user ? -1 : 1;
    return nameOf(a).localeCompare(nameOf(b)) || a.localeCompare(b);
  });
  ui.membersList.replaceChildren(...members.map((user) => {
    const who = host.userIdentity(user);
    const row = [dot(who.color, !online.has(user)),
      h('span', { class: 'name', text: who.name }),
      h('span', { class: 'handle', text: `@${user}` })];
    if (user === group.creator) row.push(h('span', { class: 'tag', text: 'creator' }));
    if (user === host.me.user) row.push(h('span', { class: 'you', text: 'you' }));
    row.push(h('span', { class: 'visually-hidden', text: online.has(user) ? ', online' : ', offline' }));
    if (creator && user !== host.me.user) {
      row.push(h('button', {
        type: 'button', class: 'ghost danger small', text: 'Remove',
        'aria-label': `Remove ${who.name} (@${user}) from ${group.title}`,
        onclick: (event) => onRemove(group, user, event.currentTarget),
      }));
    }
    return h('li', { class: 'group-member', dataset: { user } }, ...row);
  }));
  ui.addSuggestions.replaceChildren(...knownUsers().filter((u) => !group.members.includes(u))
    .map((user) => h('option', { value: user, text: nameOf(user) })));
}

function dialogGroup() {
  return groups.get(ui.membersDialog.dataset.group) || null;
}

async function onAdd(event) {
  event.preventDefault();
  const group = dialogGroup();
  if (!group) return;
  const user = ui.addInput.value.trim().replace(/^@/, '').toLowerCase();
  ui.addError.textContent = '';
  if (!USERNAME_RE.test(user)) {
    ui.addError.textContent = 'A username is 3 to 32 characters of a–z, 0–9 and _.';
    ui.addInput.focus();
    return;
  }
  if (group.members.includes(user)) {
    ui.addError.textContent = `${nameOf(user)} (@${user}) is already a member.`;
    ui.addInput.focus();
    return;
  }
  const controls = [...event.target.elements];
  for (const c of controls) c.disabled = true;
  try {
    await api('POST', `/${group.id}/members`, { user });
    if (!group.members.includes(user)) group.members.push(user);
    ui.addInput.value = '';
    host.systemLine(group.conv.key, `You added ${nameOf(user)} (@${user})`);
  } catch (err) {
    ui.addError.textContent = err.message;
  }
  for (const c of controls) c.disabled = false;
  ui.addInput.focus();
  renderMembersDialog(group);
  afterChange(group);
}

async function onRemove(group, user, button) {
  button.disabled = true;
  ui.addError.textContent = '';
  try {
    await api('DELETE', `/${group.id}/members/${encodeURIComponent(user)}`);
    group.members = group.members.filter((m) => m !== user);
    host.systemLine(group.conv.key, `You removed ${nameOf(user)} (@${user})`);
  } catch (err) {
    button.disabled = false;
    ui.addError.textContent = err.message;
  }
  renderMembersDialog(group);
  ui.addInput.focus();
  afterChange(group);
}

async function onLeave() {
  const group = dialogGroup();
  if (!group) return;
  ui.leave.disabled = true;
  group.leaving = true; // the room's eviction that follows is expected
  try {
    await api('DELETE', `/${group.id}/members/${encodeURIComponent(host.me.user)}`);
  } catch (err) {
    group.leaving = false;
    ui.leave.disabled = false;
    ui.addError.textContent = err.message;
    return;
  }
  ui.leave.disabled = false;
  ui.membersDialog.close();
  forget(group);
  host.notice(`You left ${group.title}`);
}
