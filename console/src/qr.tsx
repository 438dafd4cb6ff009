import qrcode from 'qrcode-generator';

// UTF-8, so that a label or device name beyond ASCII reads back as written (the library's default keeps one byte per character).
qrcode.stringToBytes = (s: string): number[] => Array.from(new TextEncoder().encode(s));

const QUIET = 4;

/**
 * A QR code as an SVG drawn by the page (no image URL, no inline style):
 * one path of dark modules on a white square with the standard 4-module
 * quiet zone, crisp at any size.
 */
export function QrCode({ text, label, size = 240 }: { text: string; label: string; size?: number }) {
  const qr = qrcode(0, 'M');
  qr.addData(text, 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  let d = '';
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + QUIET} ${r + QUIET}h1v1h-1z`;
  const side = n + 2 * QUIET;
  return (
    <svg class="qr" role="img" aria-label={label} width={size} height={size} viewBox={`0 0 ${side} ${side}`} shape-rendering="crispEdges">
      <title>{label}</title>
      <rect width={side} height={side} fill="#fff" />
      <path d={d} fill="#000" />
    </svg>
  );
}
