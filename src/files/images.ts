// Images, with sharp (libvips): the dimensions of an upload as it is shown
// (after its EXIF rotation) and a small WebP preview without its metadata.
// A decompression bomb (more pixels than allowed) is refused before it is
// decoded. libvips runs on libuv's threads; one at a time and no cache, so
// an upload never takes the event loop's machine from the connections.
import sharp from 'sharp';

sharp.concurrency(1);
sharp.cache(false);

export class ImageError extends Error {
  constructor(readonly code: 'IMAGE_UNREADABLE' | 'IMAGE_TOO_LARGE', message: string) {
    super(message);
    this.name = 'ImageError';
  }
}

export interface ImageOptions {
  /** More pixels than this is IMAGE_TOO_LARGE. @default 40_000_000 */
  maxPixels?: number;
  /** The preview fits in a square of this many pixels (never enlarged). @default 320 */
  previewSize?: number;
}

export async function inspectImage(bytes: Buffer, options: ImageOptions = {}): Promise<{ width: number; height: number; preview: Buffer; previewMime: 'image/webp' }> {
  const maxPixels = options.maxPixels ?? 40_000_000;
  const size = options.previewSize ?? 320;
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: maxPixels }).metadata();
  } catch (err) {
    throw new ImageError('IMAGE_UNREADABLE', `the image does not decode (${(err as Error).message})`);
  }
  const { width = 0, height = 0 } = meta;
  if (width * height > maxPixels) throw new ImageError('IMAGE_TOO_LARGE', `the image has ${width}×${height} pixels; at most ${maxPixels}`);
  if (width === 0 || height === 0) throw new ImageError('IMAGE_UNREADABLE', 'the image has no size');
  // EXIF orientations 5-8 turn the picture a quarter: it is shown the other way round.
  const turned = (meta.orientation ?? 1) >= 5;
  let preview: Buffer;
  try {
    preview = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error' })
      .rotate()
      .resize(size, size, { fit: 'inside', withoutEnlargement: true })
      .webp({ quality: 70 })
      .toBuffer();
  } catch (err) {
    throw new ImageError('IMAGE_UNREADABLE', `the image does not decode (${(err as Error).message})`);
  }
  return { width: turned ? height : width, height: turned ? width : height, preview, previewMime: 'image/webp' };
}
