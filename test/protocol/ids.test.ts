import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ID_PATTERN, directConversationId, directMembers, isValidId } from '../../src/protocol/index.js';

describe('isValidId', () => {
  test('accepts 1 to 64 characters of [A-Za-z0-9_.@-]', () => {
    for (const id of ['a', 'alice', 'Alice_01', 'a.b@c-d_e', 'user@example.com', '-', '0', 'x'.repeat(64)]) {
      assert.equal(isValidId(id), true, id);
    }
  });

  test('rejects empty, too long, separators, spaces and other characters', () => {
    const bad = ['', 'x'.repeat(65), 'a:b', 'u:a:b', 'a b', ' a', 'a\n', '\na', 'a/b', 'é', 'ä', 'a\u0000', 'a+b', '👋', 'a,b'];
    for (const id of bad) assert.equal(isValidId(id), false, JSON.stringify(id));
  });

  test('is the same check as ID_PATTERN', () => {
    assert.equal(ID_PATTERN.test('alice'), isValidId('alice'));
    assert.equal(ID_PATTERN.test('a:b'), isValidId('a:b'));
  });
});

describe('directConversationId', () => {
  test('is u:{a}:{b} with the smaller id first, whichever side asks', () => {
    assert.equal(directConversationId('alice', 'bob'), 'u:alice:bob');
    assert.equal(directConversationId('bob', 'alice'), 'u:alice:bob');
    assert.equal(directConversationId('Zed', 'adam'), 'u:Zed:adam', 'code-unit order: upper case sorts first');
    assert.equal(directConversationId('adam', 'Zed'), 'u:Zed:adam');
    assert.equal(directConversationId('user10', 'user9'), 'u:user10:user9');
  });

  test('a user with themself', () => {
    assert.equal(directConversationId('alice', 'alice'), 'u:alice:alice');
    assert.deepEqual(directMembers('u:alice:alice'), ['alice', 'alice']);
  });
});

describe('directMembers', () => {
  test('inverts directConversationId', () => {
    const pairs: [string, string][] = [['alice', 'bob'], ['bob', 'alice'], ['a.b@c', 'a-b_c'], ['x'.repeat(64), 'y'], ['9', '10']];
    for (const [a, b] of pairs) {
      const id = directConversationId(a, b);
      assert.deepEqual(directMembers(id), [a, b].sort(), id);
    }
  });

  test('rejects what is not a 1:1 conversation id', () => {
    const bad = [
      '', 'u', 'u:', 'u:alice', 'u:alice:', 'u::bob', 'u:alice:bob:carol', 'g:alice:bob', 'U:alice:bob',
      ':alice:bob', 'u:bob:alice', 'u:al ice:bob', `u:${'x'.repeat(65)}:y`, 'alice:bob',
    ];
    for (const id of bad) assert.equal(directMembers(id), undefined, JSON.stringify(id));
  });
});
