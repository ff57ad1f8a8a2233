// Types of the <face-verify> custom element (facegate.js). Importing the
// package registers the element; these declarations give TypeScript its
// properties, attributes and events, and `document.querySelector('face-verify')`
// and `createElement('face-verify')` their element type.

/** The widget's stage, also its `state` attribute. */
export type FaceVerifyState = 'loading' | 'id-capture' | 'selfie' | 'challenge' | 'submitting' | 'done' | 'error';

/** The carrier server's answer to the signed result: the decision and a stable reason code, never a score. */
export interface FacegateAnswer {
  decision: 'pass' | 'fail';
  reason: string;
  [key: string]: unknown;
}

/** The signed result the device sent (scores, pose/eye track, protected template, model hashes, nonce): no pixels, no raw embedding. */
export interface FacegateSignedResult {
  result: {
    version: number;
    session_id: string;
    nonce: string;
    issued_at_ms: number;
    match_score: number;
    passive_liveness: number;
    models: Record<string, string>;
    widget_version: string;
    device_public_key: string;
    decision: { pass: boolean; reason: string };
    [key: string]: unknown;
  };
  signature: string;
}

export interface FacegateStateDetail {
  state: FaceVerifyState;
}

export interface FacegateResultDetail {
  /** What the server received. */
  result: FacegateSignedResult;
  /** What the server answered; the carrier's back end should read its own decision record rather than trust the page. */
  answer: FacegateAnswer;
}

export interface FaceVerifyEventMap {
  'facegate-state': CustomEvent<FacegateStateDetail>;
  'facegate-result': CustomEvent<FacegateResultDetail>;
  /** The user asked for another attempt after a failure: create a new session and set `session`. */
  'facegate-retry': CustomEvent<void>;
}

/** The attributes `<face-verify>` reads, as a framework's JSX or template would pass them. */
export interface FaceVerifyAttributes {
  /** Session id from the carrier's back end (POST /v1/sessions). */
  session?: string;
  /** Origin of the carrier's facegate server; default: the page's origin. */
  server?: string;
  /** Base URL the model files are served from (see the package README); default: `models/` beside facegate.js. */
  models?: string;
  /** UI language (`en`, `zh-CN`); default: the page's language. */
  lang?: string;
  /** URL of the ID picture, instead of asking the user for it. */
  'id-src'?: string;
  /** Run without clicks (kiosks, automated tests). */
  autostart?: boolean | '';
}

export declare class FaceVerifyElement extends HTMLElement {
  session: string | null;
  /** The server origin in use: the attribute, else the page's origin. */
  server: string;
  models: string | null;
  idSrc: string | null;
  autostart: boolean;
  readonly state: FaceVerifyState | null;
  /** `pass` or `fail` once done. */
  readonly result: 'pass' | 'fail' | null;
  /** The server's reason code once done. */
  readonly reason: string | null;
  /** An error code once in the `error` state (camera_denied, model_tampered, …). */
  readonly error: string | null;
  addEventListener<K extends keyof FaceVerifyEventMap>(type: K, listener: (this: FaceVerifyElement, ev: FaceVerifyEventMap[K]) => unknown, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof FaceVerifyEventMap>(type: K, listener: (this: FaceVerifyElement, ev: FaceVerifyEventMap[K]) => unknown, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | EventListenerOptions): void;
}

/** The widget's version string, as signed into every result. */
export declare const WIDGET_VERSION: string;

declare global {
  interface HTMLElementTagNameMap {
    'face-verify': FaceVerifyElement;
  }
  // the events bubble out of the element, so a container's listener is typed too
  interface HTMLElementEventMap extends FaceVerifyEventMap {}
}
