/**
 * The break-the-glass page, for EHR clients that cannot add the FHIR security-label header. It
 * holds no data: a form that POSTs `Patient/<id>/$break-glass` with the reason, authenticated the
 * same way as the FHIR API (the CPS card over mutual TLS is sent by the browser; a bearer token
 * can be pasted and is kept in this tab only). Served with a strict CSP and a per-response nonce.
 */
export function breakGlassPage(fhirBasePath: string, nonce: string): string {
  const base = JSON.stringify(fhirBasePath);
  return `<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Accès d'urgence (bris de glace) — caregate</title>
<style nonce="${nonce}">
body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.4rem;color:#a40000}label{display:block;margin-top:1rem;font-weight:600}
input,textarea{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}textarea{min-height:6rem}
button{margin-top:1rem;padding:.6rem 1.2rem;font:inherit;background:#a40000;color:#fff;border:0;border-radius:4px}
.note{background:#fff4e5;border-left:4px solid #e08a00;padding:.5rem 1rem}#out{margin-top:1rem;white-space:pre-wrap}
</style></head><body>
<h1>Accès d'urgence à un dossier (bris de glace)</h1>
<p class="note">Cet accès est réservé aux situations d'urgence. Il est enregistré avec votre identité et votre motif,
et sera revu par le département d'information médicale (DIM). Art. L1110-4 CSP, art. 226-13 Code pénal.</p>
<form id="f">
<label for="patient">Identifiant du patient (Patient/…)</label><input id="patient" required pattern="[A-Za-z0-9\\-]{1,64}">
<label for="reason">Motif (obligatoire)</label><textarea id="reason" required minlength="10"></textarea>
<label for="token">Jeton d'accès (si vous n'utilisez pas votre carte CPS)</label><input id="token" type="password" autocomplete="off">
<button type="submit">Ouvrir l'accès d'urgence</button>
</form><div id="out" role="status"></div>
<script nonce="${nonce}">
const base = ${base};
document.getElementById('f').addEventListener('submit', async (e) => {
  e.preventDefault();
  const out = document.getElementById('out');
  const id = document.getElementById('patient').value.trim();
  const headers = { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' };
  const token = document.getElementById('token').value.trim();
  if (token) headers.authorization = 'Bearer ' + token;
  const body = { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: document.getElementById('reason').value }] };
  try {
    const r = await fetch(base + '/Patient/' + encodeURIComponent(id) + '/$break-glass', { method: 'POST', headers, body: JSON.stringify(body), credentials: 'include' });
    const j = await r.json();
    out.textContent = (r.ok ? 'Accès ouvert. ' : 'Refusé (' + r.status + '). ') + ((j.issue && j.issue[0] && j.issue[0].details && j.issue[0].details.text) || '');
  } catch (err) { out.textContent = 'Erreur réseau.'; }
});
</script></body></html>`;
}
