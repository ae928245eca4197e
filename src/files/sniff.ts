// A file's type from its bytes, never its name: an upload named photo.png
// that holds HTML is text/plain, and a PNG named notes.txt is image/png. Only
// types a browser shows without running anything are named; SVG and HTML are
// never given their own types (they are text/plain, served with nosniff).

/** The MIME type the bytes show; application/octet-stream when none is known. */
export function sniffType(bytes: Buffer): string {
  const at = (offset: number, ...sig: number[]): boolean => sig.every((b, i) => bytes[offset + i] === b);
  const ascii = (offset: number, text: string): boolean => bytes.length >= offset + text.length && bytes.toString('latin1', offset, offset + text.length) === text;
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'image/png';
  if (at(0, 0xff, 0xd8, 0xff)) return 'image/jpeg';
  if (ascii(0, 'GIF87a') || ascii(0, 'GIF89a')) return 'image/gif';
  if (ascii(0, 'RIFF') && ascii(8, 'WEBP')) return 'image/webp';
  if (ascii(0, 'RIFF') && ascii(8, 'WAVE')) return 'audio/wav';
  if (ascii(0, '%PDF-')) return 'application/pdf';
  if (at(0, 0x50, 0x4b, 0x03, 0x04) || at(0, 0x50, 0x4b, 0x05, 0x06)) return 'application/zip';
  if (ascii(4, 'ftyp')) return ascii(8, 'qt  ') ? 'video/quicktime' : 'video/mp4';
  if (at(0, 0x1a, 0x45, 0xdf, 0xa3)) return 'video/webm';
  if (ascii(0, 'ID3') || (bytes.length > 1 && bytes[0] === 0xff && (bytes[1]! & 0xe0) === 0xe0 && (bytes[1]! & 0x06) !== 0)) return 'audio/mpeg';
  if (ascii(0, 'OggS')) return 'audio/ogg';
  if (isText(bytes)) return 'text/plain';
  return 'application/octet-stream';
}

/** Valid UTF-8 (its first 8 KiB) with no control characters but tab, newlines and form feed. */
function isText(bytes: Buffer): boolean {
  const head = bytes.subarray(0, 8192);
  for (const b of head) {
    if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d && b !== 0x0c) return false;
    if (b === 0x7f) return false;
  }
  // A multi-byte character cut at the 8 KiB mark is not a fault of the file.
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(head.length === bytes.length ? head : trimPartial(head));
    return true;
  } catch {
    return false;
  }
}

/** The buffer without a UTF-8 sequence cut at its end. */
function trimPartial(head: Buffer): Buffer {
  let end = head.length;
  for (let i = 1; i <= 3 && end - i >= 0; i++) {
    const b = head[end - i]!;
    if ((b & 0xc0) === 0x80) continue;
    if (b >= 0xc0) end -= i;
    break;
  }
  return head.subarray(0, end);
}

const IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

/** The image types shown inline and given a preview. */
export function isImageType(mime: string): boolean {
  return IMAGE_TYPES.has(mime);
}
