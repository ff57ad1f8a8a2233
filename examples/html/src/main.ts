// Importing the package registers <face-verify>; its declarations type the
// element returned by querySelector and the detail of its events.
import 'facegate-widget';
import { carrierSession } from './session';

const widget = document.querySelector('face-verify')!;
const outcome = document.querySelector<HTMLParagraphElement>('#outcome')!;

widget.addEventListener('facegate-result', (event) => {
  // a display hint only: the order system asks its own back end for the
  // decision record before it activates the SIM
  const { decision, reason } = event.detail.answer;
  outcome.hidden = false;
  outcome.textContent = decision === 'pass' ? 'Identity confirmed.' : `Not confirmed (${reason}).`;
});
widget.addEventListener('facegate-retry', async () => {
  widget.session = await carrierSession({ fresh: true });
});

widget.session = await carrierSession();
