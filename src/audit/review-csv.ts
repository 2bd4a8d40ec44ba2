import type { AccessRow, ReviewModel } from './review-model.js';

/**
 * CSV output of a review: one file per table of the review model, RFC 4180 and safe to open in a
 * spreadsheet (no formula injection).
 */

/**
 * One CSV cell per RFC 4180, protected against formula injection: a text starting with `=`, `+`,
 * `-`, `@`, tab or carriage return is prefixed with `'` so that a spreadsheet shows it as text
 * instead of evaluating it (names and reasons are typed by users).
 */
export function csvCell(value: string | number): string {
  if (typeof value === 'number') return String(value);
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

/** A CSV document: header row, CRLF line ends, UTF-8 BOM so that spreadsheets read accents right. */
export function toCsv(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  return `\uFEFF${[header, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n')}\r\n`;
}

/** The CSV files of a review, by file name. */
export function reviewCsvFiles(model: ReviewModel): Record<string, string> {
  const accessHeader = [
    'recorded',
    'local_time',
    'user',
    'user_name',
    'professions',
    'patient',
    'action',
    'interaction',
    'resources',
    'outcome',
    'purpose',
    'reason',
    'client_address',
    'request_id',
    'event_id',
  ];
  const accessCells = (r: AccessRow) => [
    r.recorded,
    r.localTime,
    r.user,
    r.userName,
    r.professions,
    r.patient,
    r.action,
    r.subtype,
    r.resources,
    r.outcome,
    r.purpose,
    r.reason,
    r.clientAddress,
    r.requestId,
    r.eventId,
  ];
  const files: Record<string, string> = {
    'break-glass.csv': toCsv(
      ['recorded', 'what', 'user', 'user_name', 'patient', 'justification', 'notification', 'interaction', 'resources', 'request_id', 'event_id'],
      model.breakGlass.map((r) => [r.recorded, r.what, r.user, r.userName, r.patient, r.reason, r.notification, r.subtype, r.resources, r.requestId, r.eventId]),
    ),
    'break-glass-items.csv': toCsv(
      ['opened', 'user', 'user_name', 'patient', 'justification', 'accesses', 'age_days', 'status', 'overdue', 'verdict_by', 'verdict_at', 'comment', 'opening_event_id', 'verdict_event_id'],
      model.breakGlassItems.map((i) => [
        i.recorded,
        i.user,
        i.userName,
        i.patient,
        i.reason,
        i.accesses,
        i.ageDays,
        i.status,
        i.overdue ? 'yes' : 'no',
        i.verdict?.byName || i.verdict?.by || '',
        i.verdict?.recorded ?? '',
        i.verdict?.comment ?? '',
        i.openingId,
        i.verdict?.eventId ?? '',
      ]),
    ),
    'refusals.csv': toCsv(
      ['recorded', 'user', 'user_name', 'client_address', 'patient', 'interaction', 'resources', 'reason', 'description', 'request_id', 'event_id'],
      model.refusals.map((r) => [r.recorded, r.user, r.userName, r.clientAddress, r.patient, r.subtype, r.resources, r.reason, r.outcomeDesc, r.requestId, r.eventId]),
    ),
    'refusals-by-user.csv': toCsv(
      ['user', 'user_name', 'refusals', 'distinct_patients', 'last'],
      model.refusalsByUser.map((r) => [r.user, r.userName, r.refusals, r.patients, r.last]),
    ),
    'refusals-by-patient.csv': toCsv(
      ['patient', 'refusals', 'distinct_users', 'last'],
      model.refusalsByPatient.map((r) => [r.patient, r.refusals, r.users, r.last]),
    ),
    'off-hours.csv': toCsv(accessHeader, model.offHours.map(accessCells)),
    'patients-per-user.csv': toCsv(
      ['user', 'user_name', 'distinct_patients', 'accesses', 'threshold', 'flagged'],
      model.patientsPerUser.map((r) => [r.user, r.userName, r.patients, r.accesses, r.threshold ?? '', r.flagged ? 'yes' : 'no']),
    ),
  };
  if (model.patient) {
    files[`patient-${model.patient.patient.slice('Patient/'.length).replace(/[^A-Za-z0-9.-]/g, '_')}.csv`] = toCsv(
      accessHeader,
      model.patient.accesses.map(accessCells),
    );
  }
  return files;
}
