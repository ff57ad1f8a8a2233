// JSX types for React 19 (which passes custom-element props as properties
// or attributes): `import type {} from 'facegate-widget/react'` once in a
// TypeScript project lets `<face-verify session={id} />` type-check. Listen
// to the widget's events with a ref (see the React example).
import type { FaceVerifyAttributes, FaceVerifyElement } from './facegate.js';
import type { DetailedHTMLProps, HTMLAttributes } from 'react';

declare module 'react' {
  namespace JSX {
    interface IntrinsicElements {
      'face-verify': FaceVerifyAttributes & Omit<DetailedHTMLProps<HTMLAttributes<FaceVerifyElement>, FaceVerifyElement>, keyof FaceVerifyAttributes>;
    }
  }
}
