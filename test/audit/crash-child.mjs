// Child process for the crash test: appends AuditEvents to a strict spool as fast as 64 concurrent
// "requests" can, printing "acked <id>" only after each append resolved (i.e. after fdatasync), and
// ships to a FHIR endpoint in the background. The parent kills it with SIGKILL mid-load.
import process from 'node:process';

// Usage: node crash-child.mjs <compiled src dir> <spool dir> <audit base URL> <tag>
const [srcDir, spoolDir, baseUrl, tag] = process.argv.slice(2);
const { openSpool } = await import(`${srcDir}/audit/spool.js`);
const { createShipper } = await import(`${srcDir}/audit/shipper.js`);
const { buildAuditEvents } = await import(`${srcDir}/audit/build.js`);

const spool = await openSpool({ dir: spoolDir });
const shipper = createShipper({ spool, target: { baseUrl }, batchSize: 50, intervalMs: 5, backoff: { initialMs: 5, maxMs: 20 } });
shipper.start();
process.stdout.write('ready\n');

let seq = 0;
async function worker() {
  for (;;) {
    const n = seq++;
    const events = buildAuditEvents({
      requestId: `${tag}-${n}`,
      recorded: new Date().toISOString(),
      httpStatus: 200,
      clientAddress: '10.0.0.9',
      publicBaseUrl: 'https://fhir.example/fhir',
      site: 'crash-test',
      // Every fifth request is a search over two patients: two events answered together.
      patients: n % 5 === 0 ? ['p1', 'p2'] : ['p1'],
      interaction: {
        kind: n % 5 === 0 ? 'search-type' : 'read', method: 'GET', head: false, resourceType: 'Observation', id: `o${n}`,
        versionId: undefined, operation: undefined, operationLevel: undefined, compartment: undefined, params: [],
        conditional: undefined, body: undefined, entries: undefined, path: 'Observation', prefer: {}, format: 'json',
      },
    });
    await spool.append(events);
    // Pipes are written synchronously on Linux: once this returns, the parent can read it.
    process.stdout.write(events.map((e) => `acked ${e.id}\n`).join(''));
  }
}
for (let i = 0; i < 64; i++) void worker();
