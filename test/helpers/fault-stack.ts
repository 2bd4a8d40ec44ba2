import { startDemoFhir } from '../../src/demo/server.js';
import { startFaultUpstream } from './fault-upstream.js';
import { startStack, type Stack } from './stack.js';

export interface FaultStack {
  /** caregate in front of the fault-injecting front of a real demo engine. */
  stack: Stack;
  faults: Awaited<ReturnType<typeof startFaultUpstream>>;
  close(): Promise<void>;
}

/**
 * The demo engine (seed 42, `patients` patients), the fault-injecting front relaying to it, and
 * caregate in front of that, with `server` appended to its `server:` mapping.
 */
export async function startFaultStack(opts: { patients: number; server?: string }): Promise<FaultStack> {
  const engine = await startDemoFhir({ port: 0, host: '127.0.0.1', seed: { seed: 42, patients: opts.patients } });
  const faults = await startFaultUpstream(engine.url);
  const stack = await startStack({ upstreamUrl: faults.url, ...(opts.server ? { server: opts.server } : {}) });
  return {
    stack,
    faults,
    async close() {
      await stack.close();
      await faults.close();
      await engine.close();
    },
  };
}
