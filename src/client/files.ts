// Files: upload (with progress) and download over the HTTP API, as the user
// a login token names (docs/protocol.md, "Files"). An uploaded file is sent
// in a message by its id (SendOptions.attachments); who may download it is
// whoever may read a message holding it, and its uploader.
//
// Progress: in browsers the upload goes through XMLHttpRequest (its upload
// events); elsewhere the body is streamed to fetch in chunks, and progress is
// counted as each chunk is taken.
import { failureText } from './net-errors.js';
import { ErrorCode, LonglinkError } from '../protocol/index.js';
import { apiError, type HttpOptions } from './http.js';

/** An uploaded file, as the server stored it. */
export interface FileInfo {
  fileId: string;
  name: string;
  /** The type its bytes show (not its name's). */
  mime: string;
  size: number;
  sha256: string;
  /** Images: pixels (0 otherwise). */
  width: number;
  height: number;
  /** Images: a small preview (downloadFile with `preview`). */
  hasPreview: boolean;
  createdAtMs: number;
}

export interface UploadOptions extends HttpOptions {
  /** The file's name (shown to who receives it). @default 'file' */
  name?: string;
  /** Its type, if known: an image type the bytes are not is refused (TYPE_MISMATCH). */
  contentType?: string;
  /** Called as the bytes go: how many so far, of how many. */
  onProgress?: (sentBytes: number, totalBytes: number) => void;
}

const CHUNK = 64 * 1024;

/** The part of a browser's XMLHttpRequest an upload uses (absent in Node). */
interface Xhr {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  timeout: number;
  upload: { onprogress: ((e: { loaded: number; total: number }) => void) | null };
  onerror: (() => void) | null;
  ontimeout: (() => void) | null;
  onload: (() => void) | null;
  readonly status: number;
  readonly statusText: string;
  readonly responseText: string;
  send(body: Blob): void;
}

const XhrClass = (globalThis as { XMLHttpRequest?: new () => Xhr }).XMLHttpRequest;

function base(server: string): string {
  return server.replace(/\/$/, '');
}

function fileFromJson(j: Record<string, unknown>): FileInfo {
  return {
    fileId: String(j.file_id), name: String(j.name), mime: String(j.mime), size: Number(j.size), sha256: String(j.sha256),
    width: Number(j.width), height: Number(j.height), hasPreview: j.has_preview === true, createdAtMs: Number(j.created_at_ms),
  };
}

/** Upload a file; resolves with what the server stored (its id goes in SendOptions.attachments). */
export async function uploadFile(server: string, token: string, data: Uint8Array | Blob, options: UploadOptions = {}): Promise<FileInfo> {
  const url = `${base(server)}/api/v1/files`;
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'x-file-name': encodeURIComponent(options.name ?? 'file') };
  if (options.contentType) headers['content-type'] = options.contentType;
  if (options.fetch === undefined && XhrClass !== undefined) return uploadXhr(XhrClass, url, headers, data, options);
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(await data.arrayBuffer());
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= bytes.length) return controller.close();
      const chunk = bytes.subarray(sent, sent + CHUNK);
      sent += chunk.length;
      controller.enqueue(chunk);
      options.onProgress?.(sent, bytes.length);
    },
  });
  let res: Response;
  try {
    res = await (options.fetch ?? fetch)(url, {
      method: 'POST', headers: { ...headers, 'content-length': String(bytes.length) }, body,
      duplex: 'half', signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
    } as RequestInit);
  } catch (err) {
    throw new LonglinkError(ErrorCode.UNAVAILABLE, `cannot reach ${url}: ${failureText(err)}`);
  }
  const json = await res.json().catch(() => ({})) as Record<string, unknown>;
  if (!res.ok) throw apiError(res.status, json, res.statusText);
  return fileFromJson(json);
}

function uploadXhr(Xhr: new () => Xhr, url: string, headers: Record<string, string>, data: Uint8Array | Blob, options: UploadOptions): Promise<FileInfo> {
  return new Promise((resolve, reject) => {
    const xhr = new Xhr();
    xhr.open('POST', url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.timeout = options.timeoutMs ?? 120_000;
    xhr.upload.onprogress = (e) => options.onProgress?.(e.loaded, e.total);
    xhr.onerror = () => reject(new LonglinkError(ErrorCode.UNAVAILABLE, `cannot reach ${url}`));
    xhr.ontimeout = xhr.onerror;
    xhr.onload = () => {
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(xhr.responseText) as Record<string, unknown>;
      } catch {
        // not JSON: the status says what happened
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(fileFromJson(json));
      else reject(apiError(xhr.status, json, xhr.statusText));
    };
    xhr.send(data instanceof Uint8Array ? new Blob([data as Uint8Array<ArrayBuffer>]) : data);
  });
}

/** Download a file (or, with `preview`, an image's small WebP preview) you may read. */
export async function downloadFile(
  server: string, token: string, fileId: string, options: HttpOptions & { preview?: boolean } = {},
): Promise<{ bytes: Uint8Array; mime: string; name: string }> {
  const url = `${base(server)}/api/v1/files/${encodeURIComponent(fileId)}${options.preview ? '/preview' : ''}`;
  let res: Response;
  try {
    res = await (options.fetch ?? fetch)(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(options.timeoutMs ?? 120_000) });
  } catch (err) {
    throw new LonglinkError(ErrorCode.UNAVAILABLE, `cannot reach ${url}: ${failureText(err)}`);
  }
  if (!res.ok) throw apiError(res.status, await res.json().catch(() => ({})), res.statusText);
  const disposition = res.headers.get('content-disposition') ?? '';
  const named = /filename\*=UTF-8''([^;]+)/.exec(disposition);
  let name = fileId;
  try {
    if (named) name = decodeURIComponent(named[1]!);
  } catch {
    // a name that does not decode: the id
  }
  return { bytes: new Uint8Array(await res.arrayBuffer()), mime: res.headers.get('content-type') ?? 'application/octet-stream', name };
}
