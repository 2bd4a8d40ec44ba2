/**
 * Time for the review: local wall-clock time in the review time zone, and period bounds given as
 * dates (`YYYY-MM-DD`, a whole local day) or instants.
 */

/** An instant as read on a wall clock of the review time zone. */
export interface LocalTime {
  date: string;
  hour: number;
  weekday: number;
  label: string;
}

/** A reader of instants as local time in `timeZone` (one formatter, reused). */
export function localClock(timeZone: string): (iso: string) => LocalTime {
  const fmt = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
    weekday: 'short',
  });
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  return (iso) => {
    const parts = Object.fromEntries(fmt.formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
    const date = `${parts.year}-${parts.month}-${parts.day}`;
    return {
      date,
      hour: Number(parts.hour),
      weekday: days.indexOf(parts.weekday ?? ''),
      label: `${parts.weekday} ${date} ${parts.hour}:${parts.minute}`,
    };
  };
}

/** A date `YYYY-MM-DD` becomes the start or end of that day in `timeZone`; an instant stays as is. */
export function resolveBound(value: string, side: 'start' | 'end', timeZone: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (!m) {
    const t = Date.parse(value);
    if (Number.isNaN(t)) throw new TypeError(`not a date or instant: ${value}`);
    return new Date(t).toISOString();
  }
  const [y, mo, d] = [Number(m[1]), Number(m[2]) - 1, Number(m[3])];
  const midnight = (yy: number, mm: number, dd: number) => {
    const guess = Date.UTC(yy, mm, dd);
    // Two passes settle the offset even across a DST change.
    let t = guess - zoneOffsetMs(guess, timeZone);
    t = guess - zoneOffsetMs(t, timeZone);
    return t;
  };
  const t = side === 'start' ? midnight(y, mo, d) : midnight(y, mo, d + 1) - 1;
  return new Date(t).toISOString();
}

function zoneOffsetMs(t: number, timeZone: string): number {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-GB', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
    })
      .formatToParts(new Date(t))
      .map((p) => [p.type, Number(p.value)]),
  );
  const asUtc = Date.UTC(parts.year!, parts.month! - 1, parts.day!, parts.hour!, parts.minute!, parts.second!);
  return asUtc - (t - (t % 1000));
}
