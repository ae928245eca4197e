export * from './gen/longlink/v1/longlink_pb.js';
export * from './frame.js';
export * from './convert.js';
export * from './ids.js';
export * from './errors.js';
