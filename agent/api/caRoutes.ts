import type { CaService } from '../ca/caService.js';
import { sendError, type HttpService } from './httpServer.js';

/**
 * GET /ca/crl and GET /ca/chain: what devices and peers fetch to check the
 * gateway's certificates, outside the versioned API and without a token.
 * 503 CA_NOT_READY until the CA has published (or loaded) what is asked for.
 */
export function registerCaRoutes(http: HttpService, ca: Pick<CaService, 'loaded' | 'publishedCrl' | 'chainPem'>): void {
  http.route('GET', '/ca/crl', (_req, res) => {
    const crl = ca.publishedCrl();
    if (!crl) return sendError(res, 'CA_NOT_READY', 'no CRL has been published yet');
    res.writeHead(200, { 'content-type': 'application/x-pem-file', 'cache-control': 'no-cache' });
    res.end(crl);
  });
  http.route('GET', '/ca/chain', (_req, res) => {
    if (!ca.loaded) return sendError(res, 'CA_NOT_READY', 'the CA is not loaded');
    res.writeHead(200, { 'content-type': 'application/x-pem-file', 'cache-control': 'no-cache' });
    res.end(ca.chainPem());
  });
}
