// DOM and formatting helpers for the chat page (static/chat.js).
//
// Safety rule: names and messages come from other people, so they only ever
// reach the DOM through textContent and attributes set one by one, never
// through innerHTML. `h` is the one way the page builds elements.

const COLOR_RE = /^#[0-9a-fA-F]{6}$/;
export const GREY = '#6b7280';

/** Creates an element; `text` goes in via textContent, never as markup. */
export function h(tag, props = {}, ...children) {
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

export function safeColor(color) {
  return typeof color === 'string' && COLOR_RE.test(color) ? color : GREY;
}

/** A coloured presence dot; `off` draws it hollow. */
export function dot(color, off = false) {
  const node = h('span', { class: off ? 'dot off' : 'dot', 'aria-hidden': 'true' });
  node.style.setProperty('--c', safeColor(color));
  return node;
}

export function badge(count, label) {
  if (!count) return null;
  return h('span', { class: 'badge', text: count > 99 ? '99+' : String(count), title: label });
}

export function shortId(id) {
  return id ? String(id).split(':').pop().slice(0, 6) : 'server';
}

/** Message text from any payload: our {text}, a plain string, or other JSON. */
export function textOf(data) {
  if (typeof data === 'string') return data;
  if (data && typeof data.text === 'string') return data.text;
  try {
    return JSON.stringify(data);
  } catch {
    return String(data);
  }
}

export function formatTime(tsSeconds) {
  const d = new Date(tsSeconds * 1000);
  return {
    short: d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }),
    full: d.toLocaleString(),
    iso: d.toISOString(),
  };
}

export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/** The `data` claim of a JWT, without verifying it (the server did). */
export function decodeTokenData(jwt) {
  try {
    let b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b64.length % 4) b64 += '=';
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)).data || {};
  } catch {
    return {};
  }
}

/** A random id for one message we send, to match its echo and drop duplicates. */
export function newCid() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_');
}
