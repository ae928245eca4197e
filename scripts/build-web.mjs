// Bundles the web chat page (src/web) into dist/web with esbuild: index.html
// plus content-hashed JS and CSS in dist/web/assets/, which the embedded
// server serves at `/` (src/roles/web.ts). Run by `npm run build`.
//   node scripts/build-web.mjs [--dev]   (--dev: no minifying)
import { build } from 'esbuild';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';

const root = join(import.meta.dirname, '..');
const src = join(root, 'src', 'web');
const out = join(root, 'dist', 'web');
const dev = process.argv.includes('--dev');

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: { app: join(src, 'main.ts') },
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  outdir: join(out, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  minify: !dev,
  sourcemap: 'linked',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
  absWorkingDir: root, // metafile paths are relative to this
});

let js;
let css;
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  if (meta.entryPoint !== undefined && file.endsWith('.js')) js = file;
  if (file.endsWith('.css')) css = file;
}
if (!js || !css) throw new Error(`esbuild made no app JS or CSS: ${Object.keys(result.metafile.outputs).join(', ')}`);
const url = (file) => `/assets/${basename(file)}`;
const html = readFileSync(join(src, 'index.html'), 'utf8')
  .replace('%JS%', url(js))
  .replace('%CSS%', url(css));
writeFileSync(join(out, 'index.html'), html);

const sizes = Object.entries(result.metafile.outputs)
  .filter(([file]) => !file.endsWith('.map'))
  .map(([file, meta]) => `${basename(file)} ${(meta.bytes / 1024).toFixed(1)} KiB`);
console.log(`web page built in ${relative(root, out)}: index.html, ${sizes.join(', ')}`);
