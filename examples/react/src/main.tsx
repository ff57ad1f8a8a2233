import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { IdentityCheck } from './IdentityCheck';

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <IdentityCheck />
  </StrictMode>,
);
