import { createContext } from 'preact';
import { useContext } from 'preact/hooks';
import type { ConsoleSession } from './types.js';

/** The signed-in session: who, and what they may do. Views show a control only when its permission is held; the API still decides. */
export const SessionContext = createContext<ConsoleSession | null>(null);

export function useSession(): ConsoleSession {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSession outside a signed-in view');
  return s;
}

/** Whether the principal holds `permission`, as GET /api/v1/console/session listed them. */
export function useCan(): (permission: string) => boolean {
  const s = useSession();
  return (permission) => s.permissions?.includes(permission) ?? false;
}
