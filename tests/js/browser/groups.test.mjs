// Group rooms on the chat page (PROTOCOL.md §11.1): alice creates a group
// with bob, they talk; alice adds carol, who is online and sees the group
// appear without a reload and reads its history; alice removes bob, whose
// page says so and shows nothing sent after that; carol, not the creator,
// has no remove buttons and leaves. Refusals from the server are shown in
// the dialogs.
//
// One server (chat policy, fresh data dir); the steps build on each other.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../support/server.mjs';
import {
  PHONE, launchBrowser, registerMember, waitOnline, message, messageRow, send, screenshot, person, exactly,
} from '../support/browser.mjs';

const LAPTOP = { width: 1366, height: 768 };
const GROUP = { id: 'launch_team', title: 'Launch Team' };

/** The group's entry in the Groups section of the sidebar. */
function groupButton(page, id = GROUP.id) {
  return page.locator(`#groups .group-button[data-group="${id}"]`);
}

/** Opens the group (through the drawer on a phone) and waits until it is live. */
async function openGroup(who) {
  const button = groupButton(who.page);
  if (!(await button.isVisible())) await who.page.getByRole('button', { name: /People/ }).click();
  await button.click();
  await who.page.locator('#conv-title', { hasText: exactly(GROUP.title) }).waitFor();
  await groupButton(who.page).and(who.page.locator('[data-state="live"]')).waitFor({ state: 'attached' });
}

async function overflowsSideways(page) {
  return page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
}

describe('group rooms on the chat page', { timeout: 120_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  let carol;

  before(async () => {
    [server, browser] = await Promise.all([startServer({ policy: 'chat' }), launchBrowser()]);
    alice = await registerMember(browser, server.url, { user: 'alice', name: 'Alice' }, { viewport: LAPTOP });
    bob = await registerMember(browser, server.url, { user: 'bob', name: 'Bob' }, { viewport: PHONE });
    carol = await registerMember(browser, server.url, { user: 'carol', name: 'Carol' });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('creates a group with an online member picked from a list; both read and write', async () => {
    await person(alice.page, 'bob').waitFor();
    await alice.page.getByRole('button', { name: 'New group' }).click();
    const dialog = alice.page.getByRole('dialog', { name: 'New group' });
    await dialog.getByLabel('Title').fill(GROUP.title);
    // The id follows the title.
    assert.equal(await dialog.getByLabel('Group id').inputValue(), GROUP.id);
    await dialog.getByLabel('Bob (@bob) · online').check();
    await screenshot(alice.page, 'groups-create-dialog');
    await dialog.getByRole('button', { name: 'Create group' }).click();
    await dialog.waitFor({ state: 'hidden' });

    // alice is in it at once; bob sees it appear without reloading.
    await alice.page.locator('#conv-title', { hasText: exactly(GROUP.title) }).waitFor();
    await groupButton(alice.page).and(alice.page.locator('[data-state="live"]')).waitFor({ state: 'attached' });
    await groupButton(bob.page).waitFor({ state: 'attached' }); // in the closed drawer on a phone
    await bob.page.getByRole('button', { name: /People/ }).click();
    await screenshot(bob.page, 'groups-phone-drawer');
    await openGroup(bob);
    // Who is online in the group: one entry per person.
    await bob.page.locator('#conv-subtitle', { hasText: '2 members · 2 online: Alice, Bob' }).waitFor();

    await send(alice.page, 'hello team');
    await message(bob.page, 'hello team').waitFor();
    assert.equal(await messageRow(bob.page, 'hello team').locator('.author').textContent(), 'Alice');
    await send(bob.page, 'hi alice');
    await message(alice.page, 'hi alice').waitFor();
    await messageRow(alice.page, 'hello team').locator('.state', { hasText: /^Sent$/ }).waitFor();
    // Nobody else heard it.
    assert.equal(await carol.page.getByText('hello team').count(), 0);
    assert.equal(await groupButton(carol.page).count(), 0);
    await screenshot(alice.page, 'groups-desktop-conversation');
    await screenshot(bob.page, 'groups-phone-conversation');
    assert.equal(await overflowsSideways(bob.page), false, 'no sideways scrolling at phone width');
  });

  it('refuses a taken group id with the server\'s message', async () => {
    await alice.page.getByRole('button', { name: 'New group' }).click();
    const dialog = alice.page.getByRole('dialog', { name: 'New group' });
    await dialog.getByLabel('Title').fill(GROUP.title);
    await dialog.getByRole('button', { name: 'Create group' }).click();
    await dialog.locator('[role="alert"]', { hasText: /^Group id taken$/ }).waitFor();
    assert.equal(await dialog.getByLabel('Group id').evaluate((el) => el === document.activeElement), true);
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'hidden' });
  });

  it('adds an online member, who sees the group appear with its history', async () => {
    await alice.page.getByRole('button', { name: /^Members of Launch Team/ }).click();
    const dialog = alice.page.getByRole('dialog', { name: 'Members of Launch Team' });
    const add = dialog.getByLabel('Add a member by username');
    // An unknown user: the server's reason, and nothing changes.
    await add.fill('nobody_here');
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    await dialog.locator('[role="alert"]', { hasText: /^Unknown user nobody_here$/ }).waitFor();
    await add.fill('carol');
    await dialog.getByRole('button', { name: 'Add', exact: true }).click();
    await dialog.locator('li[data-user="carol"]').waitFor();

    // carol never reloads: the server's inbox notice brings the group, and
    // what was said before she joined counts as unread.
    await groupButton(carol.page).locator('.badge', { hasText: '2' }).waitFor();
    await screenshot(carol.page, 'groups-added-unread');
    await openGroup(carol);
    await message(carol.page, 'hello team').waitFor();
    await message(carol.page, 'hi alice').waitFor();
    const texts = await carol.page.locator('#messages li.msg .text').allTextContents();
    assert.deepEqual(texts, ['hello team', 'hi alice']);
    await dialog.locator('li[data-user="carol"] .dot:not(.off)').waitFor(); // carol is online in the group
    await screenshot(alice.page, 'groups-members-dialog');
  });

  it('lets the creator remove a member, whose page stops showing new messages', async () => {
    const dialog = alice.page.getByRole('dialog', { name: 'Members of Launch Team' });
    await dialog.getByRole('button', { name: 'Remove Bob (@bob) from Launch Team' }).click();
    await dialog.locator('li[data-user="bob"]').waitFor({ state: 'detached' });
    await dialog.getByRole('button', { name: 'Close' }).click();

    await bob.page.locator('#messages li.sys', { hasText: 'You were removed from Launch Team' }).waitFor();
    await groupButton(bob.page).and(bob.page.locator('[data-state="removed"]')).waitFor({ state: 'attached' });
    assert.equal(await bob.page.getByLabel('Message', { exact: true }).isDisabled(), true);
    assert.match(await bob.page.locator('#conv-subtitle').textContent(), /read-only/);

    await send(alice.page, 'after bob left');
    await message(carol.page, 'after bob left').waitFor();
    await message(alice.page, 'after bob left').waitFor();
    assert.equal(await bob.page.getByText('after bob left').count(), 0);
    // Nor can bob's page get back in on its own.
    const refused = await bob.page.evaluate(() => new Promise((resolve) => {
      const room = window.rookeryChat.drone.subscribe('observable-group-launch_team', { historyCount: 100 });
      room.on('open', (err) => resolve(err ? err.message : 'subscribed'));
    }));
    assert.equal(refused, 'Unauthorized');
    assert.equal(await bob.page.getByText('after bob left').count(), 0);
    // What bob could read before stays.
    await message(bob.page, 'hello team').waitFor();
    await screenshot(bob.page, 'groups-phone-removed');
    assert.equal(await overflowsSideways(bob.page), false);
  });

  it('brings the group and its history back after a reload', async () => {
    await alice.page.reload();
    await waitOnline(alice.page);
    await openGroup(alice);
    await message(alice.page, 'after bob left').waitFor();
    const texts = await alice.page.locator('#messages li.msg .text').allTextContents();
    assert.deepEqual(texts, ['hello team', 'hi alice', 'after bob left']);
    assert.match(await messageRow(alice.page, 'after bob left').getAttribute('class'), /\bown\b/);
    assert.doesNotMatch(await messageRow(alice.page, 'hi alice').getAttribute('class'), /\bown\b/);
    // Read on arrival: history of a group we already had is not unread.
    assert.equal(await groupButton(alice.page).locator('.badge').count(), 0);
  });

  it('shows remove buttons only to the creator, and lets a member leave', async () => {
    await carol.page.getByRole('button', { name: /^Members of Launch Team/ }).click();
    const dialog = carol.page.getByRole('dialog', { name: 'Members of Launch Team' });
    await dialog.locator('li[data-user="alice"]').waitFor();
    assert.equal(await dialog.getByRole('button', { name: /^Remove / }).count(), 0);
    await dialog.getByRole('button', { name: 'Leave group' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await groupButton(carol.page).waitFor({ state: 'detached' });
    await carol.page.locator('#conv-title', { hasText: '# public' }).waitFor();
    await carol.page.locator('#messages li.sys', { hasText: 'You left Launch Team' }).waitFor();

    // alice's member list no longer has carol.
    await alice.page.getByRole('button', { name: /^Members of Launch Team/ }).click();
    const hers = alice.page.getByRole('dialog', { name: 'Members of Launch Team' });
    await hers.locator('li[data-user="carol"]').waitFor({ state: 'detached' });
    assert.deepEqual(await hers.locator('li.group-member').evaluateAll((lis) => lis.map((li) => li.dataset.user)), ['alice']);
  });

  it('raised no page errors', () => {
    for (const page of [alice.page, bob.page, carol.page]) assert.deepEqual(page.errors.map(String), []);
  });
});
