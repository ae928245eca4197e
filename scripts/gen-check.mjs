// Fails when src/protocol/gen is not what `buf generate` makes from proto/.
import { execSync } from 'node:child_process';
execSync('npx buf generate', { stdio: 'inherit' });
const diff = execSync('git status --porcelain -- src/protocol/gen').toString();
if (diff.trim() !== '') {
  console.error('generated protocol code is out of date with proto/; run `npm run gen` and commit:\n' + diff);
  process.exit(1);
}
console.log('generated protocol code matches proto/');
