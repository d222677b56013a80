// The page's HTTP calls (PROTOCOL.md §8 and §11): who am I (`GET /me`),
// register, log in, log out, and minting a socket token (`POST /auth`).
//
// The session is an HttpOnly cookie the page never sees; same-origin fetches
// send it. Every failure becomes an `Error` whose message is the server's own
// text (`{"message"}` JSON, or the plain text `/auth` answers for guests).

/** Reads the server's error text from a failed response. */
async function failure(res, fallback) {
  const body = await res.text().catch(() => '');
  let message = body.trim();
  try {
    const parsed = JSON.parse(body);
    if (parsed && typeof parsed.message === 'string') message = parsed.message;
  } catch {
    // plain text: keep it as it is
  }
  const err = new Error(message || `${fallback} (HTTP ${res.status})`);
  err.status = res.status;
  const retry = Number(res.headers.get('Retry-After'));
  if (Number.isFinite(retry) && retry > 0) err.retryAfter = retry;
  return err;
}

async function postJson(path, body) {
  return fetch(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
}

/** `{user, name}` of the logged-in member, or null when there is no session. */
export async function whoAmI() {
  const res = await fetch('/me', { credentials: 'same-origin', cache: 'no-store' });
  if (res.status === 401) return null;
  if (!res.ok) throw await failure(res, 'Could not check your session');
  return res.json();
}

/** Creates an account; resolves to the (lower-cased) username. */
export async function register(username, password, name) {
  const body = { username, password };
  if (name) body.name = name;
  const res = await postJson('/register', body);
  if (!res.ok) throw await failure(res, 'Could not create the account');
  return (await res.json()).user;
}

/** Logs in; resolves to `{user, name}` and the browser keeps the session cookie. */
export async function login(username, password) {
  const res = await postJson('/login', { username, password });
  if (!res.ok) throw await failure(res, 'Could not log in');
  return res.json();
}

/** Ends the session on the server (a copy of the cookie stops working too). */
export async function logout() {
  const res = await fetch('/logout', { method: 'POST', credentials: 'same-origin' });
  if (!res.ok && res.status !== 204) throw await failure(res, 'Could not log out');
}

/**
 * Mints a token for this connection. Members get theirs from the session
 * (the server ignores `name`); guests ask for a display name.
 */
export async function mintToken(clientId, guestName) {
  const form = new FormData();
  form.append('clientID', clientId);
  if (guestName) form.append('name', guestName);
  const res = await fetch('/auth', { method: 'POST', body: form, credentials: 'same-origin' });
  if (!res.ok) throw await failure(res, 'Sign-in failed');
  return res.text();
}

export async function channelId() {
  const res = await fetch('/config.json');
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return (await res.json()).channel;
}
