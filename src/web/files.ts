// Files on the page: a message's images shown inline (their small preview,
// fetched with the login token, so as blob: URLs), its other files as
// download buttons, and the composer's upload with a progress bar. Files go
// through the SDK (uploadFile, downloadFile): the server answers only to
// whoever may read a message holding the file.
import { LonglinkError, errorName, type AttachmentData, type FileInfo, type LonglinkClient } from '../client/browser.js';
import { byId, h } from './dom.js';

/** The largest an inline image is drawn (CSS pixels). */
const IMAGE_BOX = 240;

/** "12 KB", "3.4 MB". */
export function sizeText(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** What a file says in a one-line preview: "[image]", "[file] notes.txt". */
export function fileLabel(a: Pick<AttachmentData, 'mime' | 'name'>): string {
  return a.mime.startsWith('image/') ? '[image]' : `[file] ${a.name}`;
}

/** A downloaded file as a Blob (its bytes come from a fetch's ArrayBuffer, never a shared one). */
function blobOf(file: { bytes: Uint8Array; mime: string }): Blob {
  return new Blob([file.bytes as Uint8Array<ArrayBuffer>], { type: file.mime });
}

function describe(err: unknown): string {
  if (err instanceof LonglinkError) return `${errorName(err.code)}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export class Files {
  /** Images' blob: URLs by file id, fetched once per page. */
  private readonly images = new Map<string, Promise<string>>();
  /** Files this page uploaded, by id: shown in a message still pending. */
  private readonly uploaded = new Map<string, AttachmentData>();
  private uploading = false;
  private readonly el = {
    row: byId('upload'),
    name: byId('upload-name'),
    bar: byId<HTMLProgressElement>('upload-progress'),
    percent: byId('upload-percent'),
    attach: byId<HTMLButtonElement>('attach'),
  };

  constructor(private readonly client: LonglinkClient, private readonly notice: (text: string) => void) {}

  /** Forget the page's images (log out). */
  dispose(): void {
    for (const url of this.images.values()) void url.then((u) => URL.revokeObjectURL(u), () => undefined);
    this.images.clear();
    this.uploaded.clear();
    this.showUpload(undefined);
  }

  /** A file of ours by id, as the server described it when we uploaded it. */
  known(fileId: string): AttachmentData | undefined {
    return this.uploaded.get(fileId);
  }

  /**
   * Upload a file the user picked, showing its progress; resolves with what
   * the server stored, or undefined (refused: the notice says why). One at a
   * time: the attach button waits meanwhile.
   */
  async upload(file: File): Promise<FileInfo | undefined> {
    if (this.uploading) return undefined;
    const max = this.client.session?.maxFileBytes ?? 0;
    if (max > 0 && file.size > max) {
      this.notice(`${file.name} is ${sizeText(file.size)}: files can be at most ${sizeText(max)}.`);
      return undefined;
    }
    this.uploading = true;
    this.el.attach.disabled = true;
    this.showUpload(file.name);
    try {
      const info = await this.client.uploadFile(file, {
        name: file.name,
        ...(file.type ? { contentType: file.type } : {}),
        onProgress: (sent, total) => this.progress(total > 0 ? sent / total : 1),
      });
      this.progress(1);
      this.uploaded.set(info.fileId, { fileId: info.fileId, name: info.name, mime: info.mime, size: info.size, width: info.width, height: info.height, hasPreview: info.hasPreview });
      return info;
    } catch (err) {
      this.notice(`Could not upload ${file.name}: ${describe(err)}`);
      return undefined;
    } finally {
      this.uploading = false;
      this.el.attach.disabled = false;
      this.showUpload(undefined);
    }
  }

  /** Save a file to the user's downloads under its name. */
  async download(fileId: string): Promise<void> {
    try {
      const file = await this.client.downloadFile(fileId);
      const url = URL.createObjectURL(blobOf(file));
      const a = h('a', { href: url, download: file.name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      // The download has its bytes once it started; the URL can go a little later.
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      this.notice(`Could not download the file: ${describe(err)}`);
    }
  }

  /** A message's files: images inline (a click saves the original), the others as download buttons. */
  render(files: readonly AttachmentData[]): HTMLElement | false {
    if (files.length === 0) return false;
    return h('div', { class: 'files' }, ...files.map((f) => (f.mime.startsWith('image/') && f.width > 0 ? this.image(f) : this.fileButton(f))));
  }

  private image(f: AttachmentData): HTMLElement {
    const scale = Math.min(1, IMAGE_BOX / Math.max(f.width, f.height));
    const img = h('img', {
      class: 'file-image', alt: f.name, 'data-file-id': f.fileId,
      width: Math.max(1, Math.round(f.width * scale)), height: Math.max(1, Math.round(f.height * scale)),
    });
    const figure = h('figure', { class: 'file image' }, img,
      h('figcaption', {}, h('button', { type: 'button', class: 'link', 'data-download': f.fileId, title: `Save ${f.name} (${sizeText(f.size)})` }, f.name)));
    this.imageUrl(f).then((url) => {
      img.src = url;
    }, (err: unknown) => {
      figure.classList.add('unavailable');
      img.replaceWith(h('span', { class: 'file-missing' }, `image not available (${describe(err)})`));
    });
    return figure;
  }

  private fileButton(f: AttachmentData): HTMLElement {
    return h('button', { type: 'button', class: 'file document', 'data-download': f.fileId, title: `Save ${f.name}` },
      h('span', { class: 'file-name' }, f.name), h('span', { class: 'file-size' }, `${sizeText(f.size)} · ${f.mime}`));
  }

  /** The image's preview (or, without one, the image) as a blob: URL; fetched once. */
  private imageUrl(f: AttachmentData): Promise<string> {
    let url = this.images.get(f.fileId);
    if (!url) {
      url = this.client.downloadFile(f.fileId, { preview: f.hasPreview })
        .then((file) => URL.createObjectURL(blobOf(file)));
      // A failure is not kept: the next drawing asks again (the connection may be back).
      url.catch(() => this.images.delete(f.fileId));
      this.images.set(f.fileId, url);
    }
    return url;
  }

  private showUpload(name: string | undefined): void {
    this.el.row.hidden = name === undefined;
    this.el.name.textContent = name ?? '';
    if (name !== undefined) this.progress(0);
  }

  private progress(fraction: number): void {
    const percent = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
    this.el.bar.value = percent;
    this.el.percent.textContent = `${percent}%`;
  }
}
