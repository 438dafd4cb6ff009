import { get } from '../api.js';
import { href } from '../route.js';
import type { DeviceDetails } from '../types.js';
import { Alert, Loading, useLoad } from '../ui.js';
import { QrCode } from '../qr.js';

/** What an asset label's QR code holds: JSON a CMMS or commissioning app reads back to find the device. */
export const labelContent = (id: string, assetTag: string | undefined): string =>
  JSON.stringify({ type: 'edge-agent-device', v: 1, id, ...(assetTag ? { assetTag } : {}) });

/** A label to print and stick on the device: asset tag, device id and a QR code of both. */
export function AssetLabel({ id }: { id: string }) {
  const path = `/api/v1/devices/${encodeURIComponent(id)}`;
  const { data, error } = useLoad(() => get<DeviceDetails>(path), path);
  const d = data?.device;
  return (
    <>
      <div class="page-head no-print">
        <h1 tabIndex={-1}>Asset label</h1>
        <a href={href('devices', id)}>Back to {id}</a>
        <button type="button" class="primary small" onClick={() => print()} disabled={!d}>
          Print
        </button>
      </div>
      <Alert error={error} />
      {!d ? (
        !error && <Loading />
      ) : (
        <>
          {!d.assetTag && (
            <p class="note no-print">This device has no asset tag yet: set one under “Location and asset tag” on its page to have it on the label.</p>
          )}
          <article class="label" aria-label="Asset label">
            <QrCode text={labelContent(d.id, d.assetTag)} label="QR code" size={200} />
            <div class="label-text">
              <p class="label-tag">{d.assetTag ?? 'no asset tag'}</p>
              <p class="label-id mono">{d.id}</p>
              {(d.nameplate.manufacturer || d.nameplate.model) && (
                <p class="label-model">{[d.nameplate.manufacturer, d.nameplate.model].filter(Boolean).join(' ')}</p>
              )}
              {d.location && <p class="label-loc">{[d.location.site, d.location.area, d.location.line, d.location.cell].filter(Boolean).join(' / ')}</p>}
            </div>
          </article>
        </>
      )}
    </>
  );
}
