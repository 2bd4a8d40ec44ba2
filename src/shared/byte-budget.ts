/**
 * A budget of bytes shared by the requests in flight: each takes the size of what it holds before
 * working on it, and waits its turn (first come, first served) while the budget is spent. A
 * request larger than the whole budget goes alone. It bounds the memory of the requests shaped at
 * once: an upstream page parsed, judged, serialised and audited holds several times its size
 * until its audit record is durable. Hand-written: a counting semaphore weighted in bytes, a dozen
 * lines, where the npm ones count permits or bring a scheduler. Answers of at most 1/64 of the
 * budget are not counted.
 */
export interface ByteBudget {
  /** Resolves once `bytes` are granted; call the returned function, once, to give them back. */
  take(bytes: number): Promise<() => void>;
  /** Bytes granted now, and requests waiting. */
  readonly inUse: number;
  readonly waiting: number;
}

export function createByteBudget(capacity: number): ByteBudget {
  /** Answers up to this size (1/64 of the budget) go without counting. */
  const smallBytes = Math.floor(capacity / 64);
  let inUse = 0;
  const queue: Array<{ bytes: number; grant: () => void }> = [];

  const fits = (bytes: number) => inUse === 0 || inUse + bytes <= capacity;

  function release(bytes: number): void {
    inUse -= bytes;
    while (queue.length > 0 && fits(queue[0]!.bytes)) {
      const next = queue.shift()!;
      inUse += next.bytes;
      next.grant();
    }
  }

  function giveBack(bytes: number): () => void {
    let given = false;
    return () => {
      if (given) return;
      given = true;
      release(bytes);
    };
  }

  return {
    take(bytes) {
      // Small answers are not counted: the budget governs the large ones, and a clinician's read
      // never waits behind a DIM's export.
      if (bytes <= smallBytes) return Promise.resolve(noop);
      if (queue.length === 0 && fits(bytes)) {
        inUse += bytes;
        return Promise.resolve(giveBack(bytes));
      }
      return new Promise((resolve) => queue.push({ bytes, grant: () => resolve(giveBack(bytes)) }));
    },
    get inUse() {
      return inUse;
    },
    get waiting() {
      return queue.length;
    },
  };
}

function noop(): void {}
