// Importing the package registers <face-verify>; 'facegate-widget/react'
// adds it to React's JSX types.
import 'facegate-widget';
import type {} from 'facegate-widget/react';
import type { FaceVerifyElement, FacegateAnswer } from 'facegate-widget';
import { useEffect, useRef, useState } from 'react';
import { carrierSession } from './session';

export function IdentityCheck() {
  const [session, setSession] = useState<string | null>(null);
  const [answer, setAnswer] = useState<FacegateAnswer | null>(null);
  const widget = useRef<FaceVerifyElement>(null);

  useEffect(() => {
    carrierSession().then(setSession);
  }, []);

  // the widget's events are DOM CustomEvents: listen through a ref
  useEffect(() => {
    const element = widget.current;
    if (!element) return;
    const onResult = (event: CustomEvent<{ answer: FacegateAnswer }>) => setAnswer(event.detail.answer);
    const onRetry = () => {
      setAnswer(null);
      carrierSession({ fresh: true }).then(setSession);
    };
    element.addEventListener('facegate-result', onResult);
    element.addEventListener('facegate-retry', onRetry);
    return () => {
      element.removeEventListener('facegate-result', onResult);
      element.removeEventListener('facegate-retry', onRetry);
    };
  }, [session]);

  if (!session) return <p>Preparing your order…</p>;
  return (
    <main>
      <h1>Confirm it is you</h1>
      <face-verify ref={widget} session={session} models="/facegate-models/" />
      {/* a display hint only: the order system reads the decision from its own back end */}
      {answer && <p id="outcome">{answer.decision === 'pass' ? 'Identity confirmed.' : `Not confirmed (${answer.reason}).`}</p>}
    </main>
  );
}
