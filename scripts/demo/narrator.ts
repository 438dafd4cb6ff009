/**
 * Tells the newcomer what happens in the demo plant, from what the agent's
 * API and the CMMS receiver say (never from the agent's log): devices as
 * they arrive and change state, and the records the CMMS holds.
 */

interface Device {
  id: string;
  protocol: string;
  name?: string;
  state: string;
  nameplate?: { manufacturer?: string; model?: string; displayName?: string };
}

export interface NarratorDeps {
  /** GET on the agent's API, answering the parsed JSON body. */
  api: <T>(path: string) => Promise<T>;
  /** How many device records the CMMS receiver holds for this gateway. */
  cmmsRecords: () => Promise<number>;
  print: (line: string) => void;
  intervalMs: number;
}

function what(d: Device): string {
  const plate = [d.nameplate?.manufacturer, d.nameplate?.model].filter(Boolean).join(' ') || d.nameplate?.displayName;
  return plate ? `${d.id} (${plate})` : d.id;
}

/** One sentence per device that arrived or changed state. */
export function describeChange(d: Device, before: string | undefined): string {
  const opcua = d.protocol === 'opcua';
  switch (d.state) {
    case 'pending':
      return opcua
        ? `${what(d)} approved: the agent is pushing it a certificate (OPC UA Part 12: CreateSigningRequest ... ApplyChanges)`
        : `${what(d)} asks to enroll and waits for approval: approve it in the console (Devices)`;
    case 'discovered':
      return opcua ? `${what(d)} discovered; approve it in the console and the agent pushes it a certificate (OPC UA Part 12)` : `${what(d)} discovered`;
    case 'provisioned':
      return opcua
        ? `${what(d)} provisioned: the agent pushed it a certificate from the gateway CA (OPC UA Part 12)`
        : `${what(d)} provisioned: certificate issued${before === 'pending' ? ' after approval' : ' (enrollment token, approved by policy)'}`;
    default:
      return `${what(d)} is now ${d.state}`;
  }
}

export class Narrator {
  private readonly states = new Map<string, string>();
  private cmms = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly deps: NarratorDeps) {}

  start(): void {
    const loop = async () => {
      await this.tick().catch(() => {});
      if (!this.stopped) this.timer = setTimeout(() => void loop(), this.deps.intervalMs);
    };
    void loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One look: what changed since the last one. A failing look is skipped (the next one tries again). */
  async tick(): Promise<void> {
    const { items } = await this.deps.api<{ items: Device[] }>('/api/v1/devices?limit=1000');
    for (const d of items) {
      const before = this.states.get(d.id);
      if (before === d.state) continue;
      this.states.set(d.id, d.state);
      if (!this.stopped) this.deps.print(describeChange(d, before));
    }
    const held = await this.deps.cmmsRecords();
    if (held !== this.cmms && !this.stopped) {
      this.cmms = held;
      this.deps.print(`CMMS: the receiver holds ${held} device record(s) from this gateway (the inventory is synced)`);
    }
  }
}
