// Turns the tagged Brown corpus files (word/TAG tokens) into plain text:
// tags stripped, `` and '' made into quotes, punctuation attached to words,
// one paragraph per line. Every 20th document goes to val.txt.
// Usage: node brown_to_text.js PACKAGE_DIR OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');

const [src, out] = process.argv.slice(2);
const docs = fs.readdirSync(src).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
if (docs.length === 0) throw new Error(`no Brown documents (ca01...) in ${src}`);

const noSpaceBefore = new Set(['.', ',', ';', ':', '?', '!', ')', "'", "''", "n't", "'s"]);
const noSpaceAfter = new Set(['(', '``']);

function paragraph(line) {
  let text = '';
  let glue = true;  // no space before the next word
  for (const tok of line.trim().split(/\s+/)) {
    const slash = tok.lastIndexOf('/');
    let word = slash > 0 ? tok.slice(0, slash) : tok;
    const attach = noSpaceBefore.has(word);
    if (word === '``' || word === "''") word = '"';
    text += (glue || attach ? '' : ' ') + word;
    glue = noSpaceAfter.has(tok.slice(0, slash > 0 ? slash : tok.length));
  }
  return text;
}

const train = [];
const val = [];
docs.forEach((name, i) => {
  const raw = fs.readFileSync(path.join(src, name), 'utf8');
  const paras = raw.split(/\n\s*\n/).map((p) => p.replace(/\s+/g, ' ').trim()).filter((p) => p.length > 0).map(paragraph);
  (i % 20 === 19 ? val : train).push(paras.join('\n'));
});
fs.writeFileSync(path.join(out, 'train.txt'), train.join('\n\n') + '\n');
fs.writeFileSync(path.join(out, 'val.txt'), val.join('\n\n') + '\n');
console.log(`brown_to_text: ${docs.length} documents, ${train.length} train, ${val.length} val`);
