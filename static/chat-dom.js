// DOM and formatting helpers for the chat page (static/chat.js).
//
// Safety rule: names and messages come from other people, so they only ever
// reach the DOM through textContent and attributes set one by one, never
// through innerHTML. `h` is the one way the page builds elements. The only
// markup made from message text is links (`linkified`): http(s) URLs that
// `new URL` accepts, as <a> elements built node by node.

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
  // A graphical object: 3:1 against the background (WCAG 1.4.11).
  return paint(node, color, 3);
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

/* ----------------------------------------------------------- graphemes */

const segmenter = typeof Intl !== 'undefined' && Intl.Segmenter ? new Intl.Segmenter(undefined, { granularity: 'grapheme' }) : null;

/** The first user-perceived character (an emoji with its modifiers, a letter with its accents). */
export function firstGrapheme(text) {
  const s = String(text || '').trim();
  if (!s) return '';
  if (segmenter) return segmenter.segment(s)[Symbol.iterator]().next().value.segment;
  return Array.from(s)[0]; // at least never half a surrogate pair
}

/** The avatar letter of a name: its first grapheme, upper-cased, or '?'. */
export function initial(name) {
  return firstGrapheme(name).toUpperCase() || '?';
}

/**
 * The longest start of `text` that is at most `max` UTF-16 code units (what
 * `maxlength` counts) and does not end inside a grapheme.
 */
export function cutToFit(text, max) {
  if (text.length <= max) return text;
  if (!segmenter) {
    let cut = text.slice(0, max);
    if (/[\ud800-\udbff]$/.test(cut)) cut = cut.slice(0, -1);
    return cut;
  }
  let end = 0;
  for (const { index, segment } of segmenter.segment(text)) {
    if (index + segment.length > max) break;
    end = index + segment.length;
  }
  return text.slice(0, end);
}

/* ------------------------------------------------------------- colours */

// WCAG 2 relative luminance and contrast ratio.
function channel(v) {
  const c = v / 255;
  return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
}

function rgb(hex) {
  const n = parseInt(safeColor(hex).slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function toHex([r, g, b]) {
  return `#${[r, g, b].map((v) => Math.round(v).toString(16).padStart(2, '0')).join('')}`;
}

export function luminance(hex) {
  const [r, g, b] = rgb(hex).map(channel);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/**
 * `color` moved towards black (on a light background) or white (on a dark
 * one) just far enough to reach `ratio` against `bg`: a person keeps their
 * hue, and the text stays readable whatever colour a token carried.
 */
export function readableOn(color, bg, ratio = 4.5) {
  const base = safeColor(color);
  if (contrast(base, bg) >= ratio) return base;
  const target = luminance(bg) > 0.18 ? [0, 0, 0] : [255, 255, 255];
  const from = rgb(base);
  for (let step = 1; step <= 20; step++) {
    const t = step / 20;
    const mixed = toHex(from.map((v, i) => v + (target[i] - v) * t));
    if (contrast(mixed, bg) >= ratio) return mixed;
  }
  return toHex(target);
}

/** Black or white, whichever reads better on `bg` (an avatar's letter). */
export function inkOn(bg) {
  return contrast('#000000', bg) >= contrast('#ffffff', bg) ? '#000000' : '#ffffff';
}

// The backgrounds names are drawn on (chat.css: --bubble and --panel).
export const LIGHT_BG = '#ffffff';
export const DARK_BG = '#1f2330';

/**
 * Sets the colour custom properties of a coloured element: `--c-light`
 * and `--c-dark`, each readable on that theme's background.
 */
export function paint(node, color, ratio = 4.5) {
  node.style.setProperty('--c-light', readableOn(color, LIGHT_BG, ratio));
  // The bubble is the lightest dark background a name sits on, so it decides.
  node.style.setProperty('--c-dark', readableOn(color, DARK_BG, ratio));
  return node;
}

/* --------------------------------------------------------------- links */

const URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'’”)\]}>]+$/;

/**
 * Message text as nodes: plain text, with http(s) URLs as links that open
 * in a new tab without handing over `window.opener` or a referrer. Other
 * schemes (javascript:, data:) are never matched, and every part is text.
 */
export function linkified(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let raw = match[0];
    // Trailing punctuation belongs to the sentence, except a ')' closing a '(' in the URL.
    const tail = raw.match(TRAILING);
    if (tail) {
      let keep = raw.slice(0, raw.length - tail[0].length);
      let rest = tail[0];
      while (rest.startsWith(')') && (keep.split('(').length > keep.split(')').length)) {
        keep += ')';
        rest = rest.slice(1);
      }
      raw = keep;
    }
    let url;
    try {
      url = new URL(raw);
    } catch {
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    if (match.index > last) nodes.push(document.createTextNode(text.slice(last, match.index)));
    nodes.push(h('a', { href: url.href, rel: 'noopener noreferrer', target: '_blank', text: raw }));
    last = match.index + raw.length;
  }
  if (last < text.length) nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}
