// Helpers for the browser tests: headless Debian Chromium driven by
// playwright-core (its own browser download does not work here), users that
// join the chat page, and screenshots under artifacts/screenshots/.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { createHmac } from 'node:crypto';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Default upper bound for every wait in the browser tests. */
export const WAIT = 10_000;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    timeout: 30_000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/**
 * A fresh browser context (its own cookies and storage, like another
 * person's browser) with one page. Uncaught page errors are collected in
 * `page.errors` so tests can assert none happened. `colorScheme` is the
 * emulated system preference ('light' or 'dark'); `permissions` are granted
 * to the page's origin (e.g. the clipboard).
 */
export async function newPage(browser, { viewport = DESKTOP, colorScheme = 'light', permissions } = {}) {
  const context = await browser.newContext({ viewport, reducedMotion: 'reduce', colorScheme, permissions });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  return { context, page };
}

/** Opens the chat page as a new guest and waits until it is online. */
export async function joinChat(browser, baseUrl, name, options) {
  const { context, page } = await newPage(browser, options);
  await page.goto(`${baseUrl}/`);
  await fillGuestForm(page, name);
  await waitOnline(page);
  return { context, page, name };
}

/** On the entry screen: the Guest tab, a display name, "Join chat". */
export async function fillGuestForm(page, name) {
  await page.getByRole('tab', { name: 'Guest' }).click();
  await page.locator('#guest-form').getByLabel('Display name').fill(name);
  await page.getByRole('button', { name: 'Join chat' }).click();
}

/** A password good enough for the server's rules, the same for every test user. */
export const PASSWORD = 'correct horse battery';

/**
 * Creates an account through the page's "Create account" tab (which also
 * logs in) in a fresh browser context, and waits until it is online.
 */
export async function registerMember(browser, baseUrl, { user, name, password = PASSWORD }, options) {
  const { context, page } = await newPage(browser, options);
  await page.goto(`${baseUrl}/`);
  await page.getByRole('tab', { name: 'Create account' }).click();
  const form = page.locator('#register-form');
  await form.getByLabel('Username').fill(user);
  await form.getByLabel('Password').fill(password);
  if (name) await form.getByLabel('Public name').fill(name);
  await form.getByRole('button', { name: 'Create account' }).click();
  await waitOnline(page);
  return { context, page, user, name: name || user };
}

/** Logs an existing account in through the page, in a fresh context (another device). */
export async function loginMember(browser, baseUrl, { user, name, password = PASSWORD }, options) {
  const { context, page } = await newPage(browser, options);
  await page.goto(`${baseUrl}/`);
  await fillLoginForm(page, user, password);
  await waitOnline(page);
  return { context, page, user, name: name || user };
}

export async function fillLoginForm(page, user, password = PASSWORD) {
  const form = page.locator('#login-form');
  await form.getByLabel('Username').fill(user);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button', { name: 'Log in' }).click();
}

/** The online-list entry of a member, by username. */
export function person(page, user) {
  return page.locator(`#members li[data-user="${user}"]`);
}

/** The conversations-list button of the conversation with a member, by username. */
export function dmButton(page, me, peer) {
  const room = me < peer ? `dm-${me}-${peer}` : `dm-${peer}-${me}`;
  return page.locator(`#conversations .conv-button[data-room="${room}"]`);
}

export async function waitOnline(page) {
  await page.locator('#status[data-state="online"]').waitFor({ timeout: WAIT });
}

/** The member list entry for a display name. */
export function member(page, name) {
  return page.locator('#members li').filter({ has: page.locator('.name', { hasText: exactly(name) }) });
}

/** A rendered chat message whose text is exactly `text`. */
export function message(page, text) {
  return page.locator('#messages li.msg .text', { hasText: exactly(text) });
}

/** The whole row (author, time, text) of the message whose text is exactly `text`. */
export function messageRow(page, text) {
  return page.locator('#messages li.msg').filter({ has: page.locator('.text', { hasText: exactly(text) }) });
}

/** Entry in the conversations list for a display name ('public' for the room). */
export function conversationButton(page, label) {
  return page.locator('#conversations .conv-button').filter({ has: page.locator('.label', { hasText: exactly(label) }) });
}

export function exactly(text) {
  return new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
}

/** Types a message in the composer and sends it with Enter. */
export async function send(page, text) {
  const input = page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
}

export async function screenshot(page, name) {
  const dir = join(repoRoot, 'artifacts', 'screenshots');
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`) });
}

/** A TCP port nothing listens on (for a WebSocket that must fail to connect). */
export async function unusedPort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Signs an HS256 JWT the way an application's auth server would. */
export function signJwt(claims, secret) {
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(claims)}`;
  const sig = createHmac('sha256', Buffer.from(secret, 'utf8')).update(body).digest('base64url');
  return `${body}.${sig}`;
}
