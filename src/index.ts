// `longlink` as a library: start the embedded server from code.
export { startEmbedded, type RunningServer } from './roles/embedded.js';
export { loadServerConfig, type ServerConfig, type Limits } from './config.js';
