// Lists the native sources for binding.gyp (the CPU build): every .cc under native/cpu and
// native/napi, sorted, relative to the package root. CMakeLists.txt globs the same folders itself.
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const files = [];
for (const dir of ['native/cpu', 'native/napi']) {
  for (const f of fs.readdirSync(path.join(root, dir)).sort()) {
    if (f.endsWith('.cc')) files.push(`${dir}/${f}`);
  }
}
process.stdout.write(files.join(' '));
