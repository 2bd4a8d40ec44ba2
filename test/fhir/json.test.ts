import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../src/http/errors.js';
import { MAX_JSON_DEPTH, decodeUtf8Strict, hasDuplicateKeys, parseJsonStrict, parseUpstreamJson, tryParseJsonStrict } from '../../src/fhir/json.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof ProxyError) return err.code;
    throw err;
  }
  return undefined;
}

describe('parseJsonStrict', () => {
  it('parses what JSON.parse parses', () => {
    const samples = [
      '{}',
      '[]',
      '0',
      '-1.5e+10',
      '"x"',
      'true',
      'null',
      ' {"a" : [1, 2.0, -0, 1E3, "\\u00e9\\n\\"", {"b": null}], "c": {"d": false}} ',
      '{"emoji":"\\ud83d\\ude00","raw":"😀"}',
      '{"a":1,"A":2}',
    ];
    for (const s of samples) expect(parseJsonStrict(s)).toEqual(JSON.parse(s));
  });

  it.each([
    ['top level', '{"type":"batch","type":"transaction"}', '/type'],
    ['nested object', '{"resourceType":"Observation","subject":{"reference":"Patient/a","reference":"Patient/b"}}', '/subject/reference'],
    ['inside an array', '{"entry":[{"a":1},{"a":1,"a":2}]}', '/entry/1/a'],
    ['escaped spelling of the same key', '{"type":"batch","\\u0074ype":"transaction"}', '/type'],
    [
      'inside a batch entry resource',
      '{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"POST","url":"Observation"},"resource":{"resourceType":"Observation","subject":{"reference":"Patient/ok"},"subject":{"reference":"Patient/vic"}}}]}',
      '/entry/0/resource/subject',
    ],
    [
      'in a nested bundle',
      '{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Bundle","entry":[{"resource":{"id":"1","id":"2"}}]}}]}',
      '/entry/0/resource/entry/0/resource/id',
    ],
  ])('refuses duplicate keys: %s', (_name, text, pointer) => {
    expect(hasDuplicateKeys(text)).toBe(true);
    try {
      parseJsonStrict(text);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ProxyError);
      const e = err as ProxyError;
      expect(e.code).toBe('ERR_DUPLICATE_KEYS');
      expect(e.status).toBe(400);
      expect(e.message).toContain(pointer);
      // The message names where, never a value.
      expect(e.message).not.toMatch(/Patient\/|batch|transaction/);
    }
  });

  it('masks unusual key names in the pointer', () => {
    const e = (() => {
      try {
        parseJsonStrict('{"Jean Dupont 1970":{"x":1,"x":2}}');
      } catch (err) {
        return err as ProxyError;
      }
      return undefined;
    })();
    expect(e?.message).toContain('/~/x');
    expect(e?.message).not.toContain('Dupont');
  });

  it('does not mistake equal keys in different objects for duplicates', () => {
    expect(hasDuplicateKeys('{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}')).toBe(false);
  });

  it.each([
    ['empty', ''],
    ['whitespace only', '  '],
    ['trailing comma in object', '{"a":1,}'],
    ['trailing comma in array', '[1,]'],
    ['single quotes', "{'a':1}"],
    ['unquoted key', '{a:1}'],
    ['leading zero', '{"a":01}'],
    ['bare dot number', '{"a":.5}'],
    ['NaN', '{"a":NaN}'],
    ['comment', '{"a":1 /* x */}'],
    ['two values', '{} {}'],
    ['unterminated string', '{"a":"x}'],
    ['raw newline in string', '{"a":"x\ny"}'],
    ['bad escape', '{"a":"\\x41"}'],
    ['short unicode escape', '{"a":"\\u12"}'],
    ['lone high surrogate escape', '{"a":"\\ud800"}'],
    ['lone low surrogate escape', '{"a":"\\udc00x"}'],
    ['lone surrogate escape in a key', '{"\\ud800":1,"\\udbff":2}'],
    ['raw lone surrogate', '{"a":"\ud800"}'],
    ['byte order mark', '\ufeff{}'],
    ['mismatched brackets', '{"a":[1}'],
    ['missing colon', '{"a" 1}'],
    ['prototype key', '{"__proto__":{"admin":true}}'],
    ['truncated literal', '{"a":tru}'],
  ])('refuses non-JSON: %s', (_name, text) => {
    expect(codeOf(() => parseJsonStrict(text))).toBe('ERR_BAD_REQUEST');
  });

  it('caps nesting depth', () => {
    const ok = '['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH);
    expect(parseJsonStrict(ok)).toBeDefined();
    const deep = '['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1);
    expect(codeOf(() => parseJsonStrict(deep))).toBe('ERR_BAD_REQUEST');
  });

  it('reads a large batch body (about 1 MB) whole', () => {
    const entries = Array.from({ length: 3000 }, (_, i) => ({
      fullUrl: `urn:uuid:${i}`,
      request: { method: 'POST', url: 'Observation' },
      resource: {
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
        subject: { reference: 'Patient/p1' },
        valueQuantity: { value: 72 + (i % 10), unit: '/min' },
        note: [{ text: 'é'.repeat(50) }],
      },
    }));
    const text = JSON.stringify({ resourceType: 'Bundle', type: 'batch', entry: entries });
    const parsed = parseJsonStrict(text) as { entry: unknown[] };
    expect(parsed.entry).toHaveLength(3000);
    expect(text.length).toBeGreaterThan(900_000);
  });
});

describe('decodeUtf8Strict', () => {
  it('decodes UTF-8 and refuses invalid sequences', () => {
    expect(decodeUtf8Strict(Buffer.from('{"a":"é"}'))).toBe('{"a":"é"}');
    expect(codeOf(() => decodeUtf8Strict(Buffer.from([0x7b, 0xc3, 0x28, 0x7d])))).toBe('ERR_BAD_REQUEST');
  });
});

describe('parseUpstreamJson', () => {
  it('reads upstream bodies as strictly as client bodies, as an upstream fault (502)', () => {
    const cases: (string | Buffer)[] = [
      '{"resourceType":"Observation","subject":{"reference":"Patient/a"},"subject":{"reference":"Patient/b"}}',
      Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]),
      '{"resourceType":"Bundle","entry":[null,',
      '['.repeat(MAX_JSON_DEPTH + 1) + ']'.repeat(MAX_JSON_DEPTH + 1),
    ];
    for (const c of cases) {
      try {
        parseUpstreamJson(c);
        expect.unreachable();
      } catch (err) {
        expect(err).toBeInstanceOf(ProxyError);
        expect((err as ProxyError).code).toBe('ERR_UPSTREAM_BAD_RESPONSE');
        expect((err as ProxyError).status).toBe(502);
        expect((err as ProxyError).message).not.toContain('Patient/');
      }
    }
  });

  it('parses a well-formed upstream body', () => {
    expect(parseUpstreamJson(Buffer.from('{"resourceType":"Patient","id":"p"}'))).toEqual({ resourceType: 'Patient', id: 'p' });
  });
});

describe('the fast path and the scanner', () => {
  it.each([
    ['colons and escaped quotes inside strings', '{"url":"http://x/a:b","q":"say \\"a\\":1","a":{"b":":"}}', true],
    ['a duplicate after a string full of colons', '{"url":"a:b:c","url":"d"}', false],
    ['a duplicate hidden by an escaped quote', '{"k":"\\":\\"","k":1}', false],
    ['a duplicate in a deeply nested array', '[[[[{"x":1,"y":[{"z":1,"z":2}]}]]]]', false],
    ['an escaped surrogate pair', '{"e":"\\ud83d\\ude00"}', true],
    ['backslashes before a closing quote', '{"p":"c:\\\\\\\\","q":1}', true],
    ['keys and strings holding colons', '{"a:b":"c:d","e":{"f:":":"},"g":[":",":x"]}', true],
    ['a duplicate spelled with an escaped slash', '{"a/":1,"a\\/":2}', false],
    ['a duplicate whose dropped value holds colons and members', '{"a":{"x":"1:2","y":{"z":":"}},"a":"3:4"}', false],
    ['a duplicate whose kept value holds more colons', '{"u":"x","u":"a:b:c:d"}', false],
    ['a duplicate beside an escaped colon', '{"k":"\\u003a","d":1,"d":2}', false],
  ])('agree: %s', (_name, text, ok) => {
    expect(tryParseJsonStrict(text).ok).toBe(ok);
    if (ok) expect(tryParseJsonStrict(text)).toEqual({ ok: true, value: JSON.parse(text) });
    else expect(tryParseJsonStrict(text)).toMatchObject({ ok: false, problem: { kind: 'duplicate-key' } });
  });

  it('finds every duplicate key, and only those, in generated texts with colons and escapes', () => {
    // A seeded generator writes JSON texts by hand and knows where it repeated a key (spelled the
    // same, with an escaped slash or with a \u escape): the parser must agree on all of them.
    let seed = 7;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % n;
    };
    const strings = ['x', 'a:b', ':', 'http://h/f:1', 'say \\"a\\":1', 'p\\/q', 'caf\\u00e9:', ''];
    const keys = ['a', 'b', 'c:d', 'e/f'];
    const spell = (k: string) => [k, k.replace('/', '\\/'), k.replace(/^./, (c) => `\\u00${c.charCodeAt(0).toString(16)}`)][rnd(3)]!;
    let duplicated = false;
    const write = (depth: number): string => {
      const kind = depth > 3 ? rnd(2) : rnd(4);
      if (kind === 0) return `"${strings[rnd(strings.length)]}"`;
      if (kind === 1) return String(rnd(100));
      if (kind === 2) return `[${Array.from({ length: rnd(3) }, () => write(depth + 1)).join(',')}]`;
      const used = keys.filter(() => rnd(2) === 0);
      const members = used.map((k) => `"${spell(k)}":${write(depth + 1)}`);
      if (used.length > 0 && rnd(8) === 0) {
        duplicated = true;
        members.splice(rnd(members.length + 1), 0, `"${spell(used[rnd(used.length)]!)}":${write(depth + 1)}`);
      }
      return `{${members.join(',')}}`;
    };
    let withDuplicates = 0;
    for (let i = 0; i < 2000; i++) {
      duplicated = false;
      const text = `{"root":${write(0)}}`;
      const r = tryParseJsonStrict(text);
      if (duplicated) {
        withDuplicates++;
        expect(r, text).toMatchObject({ ok: false, problem: { kind: 'duplicate-key' } });
      } else expect(r, text).toEqual({ ok: true, value: JSON.parse(text) });
    }
    expect(withDuplicates).toBeGreaterThan(100);
  });
});
