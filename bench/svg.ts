/**
 * A minimal line chart as SVG text, for the cost curves the bench writes into docs/. Written by
 * hand: no plotting library is installed, and a few polylines on logarithmic axes are all these
 * curves need (an SVG renders on GitHub and in any browser, and diffs as text).
 */
export interface Series {
  name: string;
  points: ReadonlyArray<readonly [x: number, y: number]>;
  /** Dashed: a reference line (e.g. the passthrough). */
  dashed?: boolean;
}

export interface Chart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** Logarithmic axes (the curves span 1 to 100,000). */
  logX?: boolean;
  logY?: boolean;
}

const COLORS = ['#c0392b', '#2471a3', '#229954', '#b7950b', '#7d3c98', '#616a6b'];
const W = 640;
const H = 360;
const M = { left: 64, right: 180, top: 36, bottom: 48 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => (v >= 1000 ? `${v / 1000}k` : v >= 1 ? String(+v.toPrecision(3)) : String(+v.toPrecision(2)));

/** Tick values: powers of ten on a log axis, five even steps otherwise. */
function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) out.push(10 ** e);
    return out;
  }
  const step = (hi - lo) / 5;
  return Array.from({ length: 6 }, (_, i) => lo + i * step);
}

export function lineChart(c: Chart): string {
  const pts = c.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.logY || y > 0));
  const xs = pts.map(([x]) => x);
  const ys = pts.map(([, y]) => y);
  const xt = ticks(Math.min(...xs), Math.max(...xs), c.logX ?? false);
  const yt = ticks(c.logY ? Math.min(...ys) : 0, Math.max(...ys) * 1.1, c.logY ?? false);
  const [x0, x1] = [xt[0]!, xt.at(-1)!];
  const [y0, y1] = [yt[0]!, yt.at(-1)!];
  const f = (v: number, lo: number, hi: number, log: boolean) => (log ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo || 1));
  const px = (x: number) => M.left + f(x, x0, x1, c.logX ?? false) * (W - M.left - M.right);
  const py = (y: number) => H - M.bottom - f(y, y0, y1, c.logY ?? false) * (H - M.top - M.bottom);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${M.left}" y="20" font-size="13" font-weight="bold">${esc(c.title)}</text>`,
  ];
  for (const t of xt) {
    out.push(`<line x1="${px(t).toFixed(1)}" y1="${M.top}" x2="${px(t).toFixed(1)}" y2="${H - M.bottom}" stroke="#eee"/>`);
    out.push(`<text x="${px(t).toFixed(1)}" y="${H - M.bottom + 16}" text-anchor="middle">${fmt(t)}</text>`);
  }
  for (const t of yt) {
    out.push(`<line x1="${M.left}" y1="${py(t).toFixed(1)}" x2="${W - M.right}" y2="${py(t).toFixed(1)}" stroke="#eee"/>`);
    out.push(`<text x="${M.left - 6}" y="${(py(t) + 4).toFixed(1)}" text-anchor="end">${fmt(t)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#888"/>`);
  out.push(`<text x="${(M.left + W - M.right) / 2}" y="${H - 10}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(14 ${(M.top + H - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length]!;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!c.logY || y > 0));
    const dash = s.dashed ? ' stroke-dasharray="5 4"' : '';
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${p.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of p) out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = M.top + 8 + i * 18;
    out.push(`<line x1="${W - M.right + 12}" y1="${ly}" x2="${W - M.right + 32}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${W - M.right + 38}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
