// Preloaded (`node --import`) before the cache-tests origin server, which calls
// `server.listen(port)` with no host and so would listen on every interface. This makes any
// listen given a port but no host listen on 127.0.0.1 instead; the suite's code runs unchanged.
import net from 'node:net'

const listen = net.Server.prototype.listen

net.Server.prototype.listen = function (...args) {
  const portOnly = typeof args[0] === 'number' || typeof args[0] === 'string'
  if (portOnly && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1')
  }
  return listen.apply(this, args)
}
