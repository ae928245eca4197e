// The "Create group" member ids, as the web page reads them (src/web/members.ts):
// commas and/or spaces separate them, duplicates and the creator drop out, and
// the first id the server would refuse is named instead of sending anything.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMembers } from '../../src/web/members.js';

describe('group member ids typed in the web page', () => {
  test('commas, spaces, tabs and newlines separate ids; empties and duplicates drop out; order is kept', () => {
    assert.deepEqual(parseMembers(' bob, carol  dave,,\tbob\nerin, ', 'alice'), { ok: true, ids: ['bob', 'carol', 'dave', 'erin'] });
    assert.deepEqual(parseMembers('bob,carol', 'alice'), { ok: true, ids: ['bob', 'carol'] });
    assert.deepEqual(parseMembers('', 'alice'), { ok: true, ids: [] });
  });

  test('ids use the server\'s alphabet: letters, digits and _ . @ -', () => {
    assert.deepEqual(parseMembers('a.b@c-d_e', 'alice'), { ok: true, ids: ['a.b@c-d_e'] });
  });

  test('the creator is left out (the server makes them the owner)', () => {
    assert.deepEqual(parseMembers('alice, bob', 'alice'), { ok: true, ids: ['bob'] });
  });

  test('a bad id is named, and nothing is returned to send', () => {
    const r = parseMembers('bob; carol, dave', 'alice');
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.error : '', /“bob;”/);
    const long = 'x'.repeat(65);
    assert.match((parseMembers(`bob ${long}`, 'alice') as { error: string }).error, new RegExp(`“${long}”`));
    assert.match((parseMembers('bob, carol:x', 'alice') as { error: string }).error, /“carol:x”/);
    assert.match((parseMembers('bob system', 'alice') as { error: string }).error, /“system” is reserved/);
  });
});
