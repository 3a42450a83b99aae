// A small asynchronous HTTP/1.1 server on Boost.Beast/Asio: a few I/O threads
// serve any number of keep-alive connections (no thread per connection). Each
// connection runs on its own strand; the handler of a request, and every call
// on its HttpExchange, happen on that strand. Code on other threads (the
// engine's) reaches an exchange through HttpExchange::post.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace relayllm {

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path and query as sent
  std::string path;                            // target without the query
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;

  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

class HttpSession;

// One request's response side. Either respond() once, or start_stream(), then
// write() any number of chunks and end_stream(). Calls after the client went
// away are ignored. respond/start_stream/write/end_stream/on_disconnect may be
// called from any thread: they run on the connection's strand, in call order.
// started() and closed() are for code already on the strand.
class HttpExchange : public std::enable_shared_from_this<HttpExchange> {
 public:
  explicit HttpExchange(std::shared_ptr<HttpSession> session);
  ~HttpExchange();

  void respond(int status, const std::string& content_type, std::string body);
  void start_stream(int status, const std::string& content_type);
  void write(std::string data);
  void end_stream();

  // Runs `fn` on the connection's strand; safe from any thread.
  void post(std::function<void()> fn);
  // Called once, on the strand, when the client disconnects before the
  // response is complete (read EOF/reset, or a failed write), or at once when
  // that happened before on_disconnect was called.
  void on_disconnect(std::function<void()> fn);
  bool closed() const;
  bool started() const { return started_; }

 private:
  friend class HttpSession;
  void notify_disconnect();
  void on_strand(std::function<void()> fn);

  std::shared_ptr<HttpSession> session_;
  std::function<void()> on_disconnect_;
  bool started_ = false;
  bool done_ = false;
  bool disconnected_ = false;
};

using HttpHandler = std::function<void(const HttpRequest&, std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;                // 0: any free port (see HttpServer::port)
  size_t max_body_bytes = 8 << 20;     // larger bodies get 413
  size_t max_header_bytes = 64 << 10;  // larger headers get 431
  int num_threads = 2;
  // Open connections beyond this are answered 503 and closed at once, so a flood of
  // clients cannot exhaust the process's file descriptors. 0: no limit.
  int64_t max_connections = 8192;
  int idle_timeout_s = 60;    // a keep-alive connection idle this long before a request is closed
  int header_timeout_s = 60;  // from a request's first byte to the end of its headers
  int body_timeout_s = 300;   // from the end of the headers to the end of the body
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();

  // Binds and starts the I/O threads; throws Error when the address is taken.
  void start();
  // Closes the listening socket: new connections are refused, open ones keep being
  // served, and every response from now on closes its connection.
  void stop_accepting();
  // Stops accepting and running handlers; joins the I/O threads.
  void stop();
  uint16_t port() const;
  // Requests read and not yet answered in full (handlers running, streams open).
  int64_t num_active_requests() const;
  int64_t num_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace relayllm
