// Files over HTTP: upload (POST /api/v1/files) and download
// (GET /api/v1/files/{id}, and /preview for an image's small preview).
//
// Both are the user's own requests, authorized by a login token
// (`Authorization: Bearer <token>`, as the gateway takes it; a revoked token
// is refused). An upload is the file's raw bytes as the body (not a form),
// its name in `X-File-Name` (percent-encoded) or `?name=`:
// - at most FileSettings.maxBytes (FILE_TOO_LARGE, before any byte is read
//   when Content-Length says so), and within the user's hourly quota in files
//   and bytes (UPLOAD_QUOTA), two uploads of one user at a time (UPLOAD_BUSY);
// - its type is the one its bytes show (files/sniff.ts); a Content-Type of
//   an image type that the bytes are not is refused (TYPE_MISMATCH);
// - an image is decoded (IMAGE_UNREADABLE, IMAGE_TOO_LARGE past 40 million
//   pixels): its dimensions are kept and a small WebP preview made.
// A download is answered to the uploader and to whoever may read a message
// holding the file (FileStore.mayReadFile); anyone else gets the same 404 as
// for a file that does not exist. It is served with the stored type,
// `nosniff`, a sandboxing CSP, and as an attachment unless it is an image.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpError } from '../protocol/http-errors.js';
import { send } from './http-api.js';
import { ErrorCode, LonglinkError } from '../protocol/index.js';
import type { TokenService } from '../auth/tokens.js';
import type { Sessions } from '../engines/sessions.js';
import type { FileRecord, FileStore } from '../engines/store.js';
import type { FileSettings } from '../config.js';
import type { BlobStore } from '../files/blobs.js';
import { isImageType, sniffType } from '../files/sniff.js';
import { ImageError, inspectImage } from '../files/images.js';
import { UploadError, cleanFileName, newFileId, readUpload } from '../files/upload.js';
import { log as rootLog } from '../observability/log.js';

const log = rootLog.child({ component: 'files' });

/** Uploads of one user running at once (on this node). */
const UPLOADS_AT_ONCE = 2;
const HOUR_MS = 3600_000;
const FILE_PATH = /^\/api\/v1\/files\/([A-Za-z0-9_-]{1,64})(\/preview)?$/;

export interface FilesDeps {
  tokens: TokenService;
  sessions: Sessions;
  store: FileStore;
  blobs: BlobStore;
}

export class FilesApi {
  private readonly uploading = new Map<string, number>();

  constructor(
    private readonly settings: FileSettings,
    private readonly deps: FilesDeps,
  ) {}

  /** Whether the request is one of these routes (then handled: answered, never thrown). */
  handles(path: string): boolean {
    return path === '/api/v1/files' || path.startsWith('/api/v1/files/');
  }

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    if (path === '/api/v1/files') {
      if (method !== 'POST') throw new HttpError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
      return this.upload(req, res);
    }
    const m = FILE_PATH.exec(path);
    if (!m) throw new HttpError('NOT_FOUND', `no route for ${method} ${path}`);
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${path}`);
    return this.download(req, res, m[1]!, m[2] !== undefined);
  }

  /** The user a login token names, or a coded refusal (401). */
  private async user(req: IncomingMessage): Promise<string> {
    const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!match) throw new HttpError('UNAUTHORIZED', 'missing Authorization: Bearer <login token>');
    const claims = await this.deps.tokens.verify(match[1]!);
    if (await this.deps.sessions.revokedBefore(claims.userId, claims.deviceId) >= claims.issuedAtMs) {
      throw new LonglinkError(ErrorCode.TOKEN_REVOKED, 'this token was revoked');
    }
    return claims.userId;
  }

  private async upload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A refused upload's body is not read: the connection closes after the answer instead.
    const refuse = (err: HttpError): HttpError => {
      res.shouldKeepAlive = false;
      return err;
    };
    const userId = await this.user(req).catch((err: unknown) => {
      res.shouldKeepAlive = false;
      throw err;
    });
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > this.settings.maxBytes) throw refuse(new HttpError('FILE_TOO_LARGE', `the file is over ${this.settings.maxBytes} bytes`));
    const running = this.uploading.get(userId) ?? 0;
    if (running >= UPLOADS_AT_ONCE) throw refuse(new HttpError('UPLOAD_BUSY', `at most ${UPLOADS_AT_ONCE} uploads of one user at a time`));
    this.uploading.set(userId, running + 1);
    try {
      const used = await this.deps.store.uploadsSince(userId, Date.now() - HOUR_MS);
      if (used.count >= this.settings.perHour || used.bytes + (Number.isFinite(declared) ? declared : 0) > this.settings.bytesPerHour) {
        throw refuse(new HttpError('UPLOAD_QUOTA', `at most ${this.settings.perHour} files and ${this.settings.bytesPerHour} bytes an hour; try later`));
      }
      const file = await this.store(userId, req, res);
      send(res, 201, fileJson(file));
    } finally {
      const left = (this.uploading.get(userId) ?? 1) - 1;
      if (left > 0) this.uploading.set(userId, left);
      else this.uploading.delete(userId);
    }
  }

  private async store(userId: string, req: IncomingMessage, res: ServerResponse): Promise<FileRecord> {
    const url = new URL(req.url ?? '/', 'http://x');
    const header = req.headers['x-file-name'];
    const name = cleanFileName(typeof header === 'string' ? header : url.searchParams.get('name') ?? undefined);
    const { bytes, sha256 } = await readUpload(req, this.settings.maxBytes).catch((err: unknown) => {
      if (!(err instanceof UploadError)) throw err;
      res.shouldKeepAlive = false;
      throw new HttpError(err.code, err.message);
    });
    const mime = sniffType(bytes);
    const claimed = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (isImageType(claimed) && claimed !== mime) throw new HttpError('TYPE_MISMATCH', `the bytes are ${mime}, not ${claimed}`);
    const id = newFileId();
    const file: FileRecord = { id, ownerId: userId, name, mime, size: bytes.length, sha256, width: 0, height: 0, hasPreview: false, createdAtMs: Date.now() };
    if (isImageType(mime)) {
      const image = await inspectImage(bytes).catch((err: unknown) => {
        if (err instanceof ImageError) throw new HttpError(err.code, err.message);
        throw err;
      });
      file.width = image.width;
      file.height = image.height;
      await this.deps.blobs.put(`${id}.preview`, image.preview);
      file.hasPreview = true;
    }
    await this.deps.blobs.put(id, bytes);
    await this.deps.store.putFile(file);
    log.info({ user: userId, file: id, mime, size: bytes.length }, 'file stored');
    return file;
  }

  private async download(req: IncomingMessage, res: ServerResponse, id: string, preview: boolean): Promise<void> {
    const userId = await this.user(req);
    const file = (await this.deps.store.files([id])).get(id);
    if (!file || !(preview ? file.hasPreview : true) || !(await this.deps.store.mayReadFile(userId, id))) {
      throw new LonglinkError(ErrorCode.FILE_NOT_FOUND, `no file ${id} you may read`);
    }
    const bytes = await this.deps.blobs.get(preview ? `${id}.preview` : id);
    if (!bytes) throw new LonglinkError(ErrorCode.FILE_NOT_FOUND, `no file ${id} you may read`);
    const mime = preview ? 'image/webp' : file.mime;
    const inline = isImageType(mime);
    res.writeHead(200, {
      'content-type': mime,
      'content-length': bytes.length,
      'content-disposition': `${inline ? 'inline' : 'attachment'}; filename*=UTF-8''${encodeURIComponent(preview ? `preview-${file.name}.webp` : file.name)}`,
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'none'; sandbox",
      // A file never changes: the same id is always the same bytes (a private cache only: it is the user's).
      'cache-control': 'private, max-age=31536000, immutable',
      etag: `"${file.sha256}${preview ? '-p' : ''}"`,
    });
    res.end(req.method === 'HEAD' ? undefined : bytes);
  }
}

/** A file as the API answers it. */
export function fileJson(f: FileRecord): Record<string, unknown> {
  return {
    file_id: f.id, name: f.name, mime: f.mime, size: f.size, sha256: f.sha256,
    width: f.width, height: f.height, has_preview: f.hasPreview, created_at_ms: f.createdAtMs,
  };
}
