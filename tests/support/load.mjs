// A config change made while clients keep sending: which requests were sent after the change's 2xx, and where they went.

/**
 * Sends GETs to `host` from 4 concurrent clients; when request `at` is due, POSTs `body` as the
 * service's new config. The clients go on until `after` requests were sent after the write's 2xx
 * arrived (a slow write, under a lease fence, must not leave too few to judge by), bounded by
 * `deadlineMs` and `maxTotal`. Each request carries its send time in the URL (`?t=`), so a
 * backend's record says when the client sent it. Returns the write's answer, when its 2xx arrived,
 * how long it took, how many requests were sent after it, and the clients' failures.
 */
export async function changeUnderLoad(lb, host, body, { at = 100, after = 50, deadlineMs = 30_000, maxTotal = 5_000 } = {}) {
  let sent = 0;
  let sentAfter = 0;
  let change;
  let changedAt = 0;
  let writeMs = 0;
  const failures = [];
  const deadline = Date.now() + deadlineMs;
  const done = () => (changedAt > 0 && sentAfter >= after) || sent >= maxTotal || Date.now() > deadline;
  const loop = async () => {
    while (!done()) {
      const n = sent++;
      if (n === at) {
        const t0 = Date.now();
        change = lb
          .admin(`/admin/services/${host}/config`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body),
          })
          .then(async (res) => {
            changedAt = Date.now();
            writeMs = changedAt - t0;
            return { status: res.status, text: await res.text() };
          });
      }
      const t = Date.now();
      if (changedAt > 0 && t > changedAt) sentAfter++;
      const res = await lb.fetch(host, `/l${n}?t=${t}`);
      if (res.status !== 200) failures.push(`${n}: ${res.status} ${await res.text()}`);
      else await res.arrayBuffer();
    }
  };
  await Promise.all([loop(), loop(), loop(), loop()]);
  const res = await change;
  return { res, changedAt, writeMs, sentAfter, failures };
}

/** When the client sent a request a backend recorded (see `changeUnderLoad`). */
export const sentAt = (r) => Number(new URL(r.url, "http://x").searchParams.get("t"));
