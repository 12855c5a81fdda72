// Cloudflare list prices and free-plan limits the cost table uses: the one place they live, each with its source and the date read.

/** When the figures below were read from the pages they cite. */
export const READ_ON = "2026-12-05";

/** Workers Paid (Standard usage model) and Workers Free. Read 2026-12-05 from
 * https://developers.cloudflare.com/workers/platform/pricing/ (the same table as
 * https://developers.cloudflare.com/workflows/reference/pricing/, "identical to Workers Standard pricing"). */
export const WORKERS = {
  source: "https://developers.cloudflare.com/workers/platform/pricing/",
  paid: {
    requestsIncludedPerMonth: 10_000_000,
    usdPerMillionRequests: 0.3,
    cpuMsIncludedPerMonth: 30_000_000,
    usdPerMillionCpuMs: 0.02,
  },
  free: { requestsPerDay: 100_000, cpuMsPerInvocation: 10 },
};

/** Durable Objects compute (requests include HTTP requests, RPC sessions, WebSocket messages and
 * alarm invocations). Read 2026-12-05 from https://developers.cloudflare.com/durable-objects/platform/pricing/ */
export const DURABLE_OBJECTS = {
  source: "https://developers.cloudflare.com/durable-objects/platform/pricing/",
  paid: {
    requestsIncludedPerMonth: 1_000_000,
    usdPerMillionRequests: 0.15,
    gbSecondsIncludedPerMonth: 400_000,
    usdPerMillionGbSeconds: 12.5,
  },
  free: { requestsPerDay: 100_000, gbSecondsPerDay: 13_000 },
  /** Duration is billed at the isolate's 128 MB, whatever it really uses. */
  memoryGb: 0.128,
};

/** D1 (rows written include index entries and deletes). Read 2026-12-05 from
 * https://developers.cloudflare.com/d1/platform/pricing/ */
export const D1 = {
  source: "https://developers.cloudflare.com/d1/platform/pricing/",
  paid: {
    rowsWrittenIncludedPerMonth: 50_000_000,
    usdPerMillionRowsWritten: 1.0,
    rowsReadIncludedPerMonth: 25_000_000_000,
    usdPerMillionRowsRead: 0.001,
  },
  free: { rowsWrittenPerDay: 100_000, rowsReadPerDay: 5_000_000 },
};
