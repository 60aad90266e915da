/** Tandem's version, as the OpenAPI document and DTM's /api/dtmsvr/version report it; keep in step with package.json. */
export const tandemVersion = '0.1.0';
