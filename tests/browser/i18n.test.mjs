// Translations: every language has every key, every key the widget and the
// demo page use exists, and every reason code the core and the server can
// produce has a message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { STRINGS, translate, pickLanguage } from '../../www/i18n.js';
import { root } from './harness.mjs';

const languages = Object.keys(STRINGS);
const source = (rel) => readFileSync(path.join(root, rel), 'utf8');

test('both shipped languages exist and have exactly the same keys, none empty', () => {
  assert.ok(languages.includes('en') && languages.includes('zh-CN'));
  const en = Object.keys(STRINGS.en).sort();
  for (const lang of languages) {
    assert.deepEqual(Object.keys(STRINGS[lang]).sort(), en, `${lang} keys differ from en`);
    for (const [k, v] of Object.entries(STRINGS[lang])) assert.ok(v.trim().length > 0, `${lang}.${k} is empty`);
    // placeholders survive translation
    for (const k of en) {
      const names = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      assert.deepEqual(names(STRINGS[lang][k]), names(STRINGS.en[k]), `${lang}.${k} placeholders`);
    }
  }
});

test('every key the widget and demo page name exists', () => {
  const www = readdirSync(path.join(root, 'www')).filter((f) => /\.(js|html)$/.test(f) && f !== 'i18n.js');
  const used = new Set();
  for (const f of www) {
    const text = source(`www/${f}`);
    for (const m of text.matchAll(/\bt\('([a-z_]+)'/g)) used.add(m[1]);
    for (const m of text.matchAll(/data-i18n="([a-z_]+)"/g)) used.add(m[1]);
  }
  assert.ok(used.size > 30, `only ${used.size} keys found: the scan is broken`);
  for (const k of used) assert.ok(k in STRINGS.en, `key ${k} is used but not translated`);
});

test('every quality reason, challenge step, decision reason and widget error has a message', () => {
  const snake = (s) => s.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
  const variants = (file, enumName) => {
    const body = source(file).match(new RegExp(`pub enum ${enumName} \\{([^}]*)\\}`))[1];
    return [...body.matchAll(/^\s*([A-Z]\w*)/gm)].map((m) => snake(m[1]));
  };
  const quality = variants('src/quality.rs', 'QualityReason');
  assert.ok(quality.length >= 8);
  for (const r of quality) assert.ok(`hint_${r}` in STRINGS.en, `no hint for quality reason ${r}`);
  for (const s of variants('src/challenge.rs', 'Step')) assert.ok(`step_${s}` in STRINGS.en, `no text for step ${s}`);
  // decision reasons: the core's challenge failures and policy outcomes
  const reasons = [...source('src/challenge.rs').matchAll(/=> "([a-z_]+)",/g)].map((m) => m[1]);
  reasons.push(...[...source('src/session.rs').matchAll(/=> "([a-z_]+)",/g)].map((m) => m[1]));
  assert.ok(reasons.includes('challenge_timeout') && reasons.includes('no_match'));
  for (const r of reasons) assert.ok(`reason_${r}` in STRINGS.en, `no text for decision reason ${r}`);
  // errors the widget raises by name
  const widget = source('www/facegate.js');
  const errors = new Set([...widget.matchAll(/fail\('([a-z_]+)'/g), ...widget.matchAll(/code: '([a-z_]+)'/g)].map((m) => m[1]));
  errors.add('model_tampered');
  errors.add('model_download');
  for (const e of errors) assert.ok(`error_${e}` in STRINGS.en || e === 'internal', `no text for widget error ${e}`);
});

test('language choice: exact tag, then the language family, then English', () => {
  assert.equal(pickLanguage('zh-CN'), 'zh-CN');
  assert.equal(pickLanguage('zh-TW'), 'zh-CN');
  assert.equal(pickLanguage(undefined, ['fr-FR', 'zh']), 'zh-CN');
  assert.equal(pickLanguage('fr'), 'en');
  assert.equal(translate('zh-CN', 'challenge_step_of', { n: 2, total: 3 }), '动作 2 / 3');
});
