#include "relayllm/server/http_server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>

#include "relayllm/common/error.h"
#include "relayllm/server/api_error.h"

namespace relayllm {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

std::string status_line(int status) {
  auto reason = http::obsolete_reason(http::int_to_status(unsigned(status)));
  return fmt::format("HTTP/1.1 {} {}\r\n", status, std::string_view(reason.data(), reason.size()));
}

// Errors the HTTP layer answers itself (before any handler), in the API's JSON shape;
// `param` names the part of the request at fault.
std::string http_error_response(int status, const std::string& message, const char* param) {
  nlohmann::json body = {{"error",
                          {{"message", message},
                           {"type", api_error_type(status)},
                           {"param", param ? nlohmann::json(param) : nlohmann::json(nullptr)},
                           {"code", status}}}};
  std::string text = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return status_line(status) +
         fmt::format(
             "Content-Type: application/json\r\nContent-Length: {}\r\n"
             "Connection: close\r\n\r\n",
             text.size()) +
         text;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

// Shared by the server and its sessions; outlives both (see HttpServer::Impl).
struct HttpOptionsHolder {
  HttpServerOptions options;
  HttpHandler handler;
};

struct HttpCounters {
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> active{0};
  std::atomic<bool> draining{false};
};

// One TCP connection: reads a request, hands it to the handler, writes the
// response (whole or chunked), then reads the next one. While a response is
// pending, a one-byte-or-more read watches the socket so that a client that
// hangs up is noticed even when nothing is being written.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, const HttpServerOptions& options, const HttpHandler& handler,
              HttpCounters& counters)
      : stream_(std::move(socket)), options_(options), handler_(handler), counters_(counters) {
    ++counters_.connections;
  }
  ~HttpSession() {
    set_active(false);
    --counters_.connections;
  }

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

  // Answers 503 and closes: the connection is over --max-connections.
  void refuse() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->reply_error_and_close(503, "too many open connections; retry later", nullptr);
    });
  }

  asio::any_io_executor executor() { return stream_.get_executor(); }
  bool closed() const { return closed_; }
  bool close_after() const { return close_after_; }

  void queue_write(std::string data) {
    if (closed_) return;
    out_.push_back(std::move(data));
    if (!writing_) write_next();
  }

  // The exchange wrote its last bytes: once they are out, the next request may be read.
  void finish_response(bool close_after) {
    end_pending_ = true;
    close_after_ = close_after || close_after_;
    if (!writing_) response_written();
  }

 private:
  // A request is read in three timed phases: waiting for its first byte (the idle
  // timeout of a keep-alive connection), its headers, then its body.
  void read_request() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(uint32_t(std::min<size_t>(options_.max_header_bytes, UINT32_MAX)));
    if (buffer_.size() > 0) {
      read_header();
      return;
    }
    stream_.expires_after(std::chrono::seconds(options_.idle_timeout_s));
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) {
                                self->close();
                                return;
                              }
                              self->buffer_.commit(n);
                              self->read_header();
                            });
  }

  void read_header() {
    stream_.expires_after(std::chrono::seconds(options_.header_timeout_s));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      on_request(ec);
      return;
    }
    if (parser_->is_done()) {
      on_request({});
      return;
    }
    // curl and others wait (1 s) for this before sending a large body.
    auto expect = parser_->get().find(http::field::expect);
    if (expect != parser_->get().end() &&
        iequals(std::string_view(expect->value().data(), expect->value().size()), "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(std::chrono::seconds(options_.body_timeout_s));
      asio::async_write(stream_.socket(), asio::buffer(kContinue.data(), kContinue.size()),
                        [self = shared_from_this()](beast::error_code ec, size_t) {
                          if (ec) {
                            self->close();
                            return;
                          }
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(std::chrono::seconds(options_.body_timeout_s));
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_request(ec); });
  }

  void on_request(beast::error_code ec) {
    stream_.expires_never();
    if (ec == http::error::body_limit) {
      reply_error_and_close(413,
                            fmt::format("request body exceeds the limit of {} bytes "
                                        "(--max-body-bytes)",
                                        options_.max_body_bytes),
                            "body");
      return;
    }
    if (ec == http::error::header_limit) {
      reply_error_and_close(
          431,
          fmt::format("request headers exceed the limit of {} bytes", options_.max_header_bytes),
          "headers");
      return;
    }
    if (ec) {
      if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
          ec != beast::error::timeout && ec != asio::error::connection_reset &&
          ec != asio::error::eof && ec != http::error::partial_message)
        reply_error_and_close(400, fmt::format("malformed HTTP request: {}", ec.message()),
                              nullptr);
      else
        close();
      return;
    }
    auto& msg = parser_->get();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    for (const auto& field : msg) {
      std::string name(field.name_string());
      for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
      req.headers[name] = std::string(field.value());
    }
    req.body = std::move(msg.body());
    close_after_ = !msg.keep_alive() || counters_.draining.load();
    end_pending_ = false;
    responding_ = true;
    set_active(true);
    auto exchange = std::make_shared<HttpExchange>(shared_from_this());
    current_ = exchange;
    watch_socket();
    try {
      handler_(req, exchange);
    } catch (const std::exception& e) {
      spdlog::error("http handler failed on {} {}: {}", req.method, req.path, e.what());
      if (!exchange->started()) exchange->respond(500, "text/plain", "internal error\n");
    }
  }

  void reply_error_and_close(int status, const std::string& message, const char* param) {
    responding_ = true;
    current_.reset();
    queue_write(http_error_response(status, message, param));
    finish_response(true);
  }

  void set_active(bool active) {
    if (active == active_) return;
    active_ = active;
    if (active)
      ++counters_.active;
    else
      --counters_.active;
  }

  void watch_socket() {
    if (watch_pending_) return;
    watch_pending_ = true;
    stream_.socket().async_read_some(buffer_.prepare(4096),
                                     [self = shared_from_this()](beast::error_code ec, size_t n) {
                                       self->watch_pending_ = false;
                                       if (!ec) {
                                         // A pipelined request: keep its bytes for the next read.
                                         self->buffer_.commit(n);
                                         if (!self->responding_) self->read_request();
                                         return;
                                       }
                                       if (ec == asio::error::operation_aborted) {
                                         if (!self->responding_ && !self->closed_)
                                           self->read_request();
                                         return;
                                       }
                                       self->client_gone();
                                     });
  }

  void write_next() {
    writing_ = true;
    asio::async_write(stream_.socket(), asio::buffer(out_.front()),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (self->closed_) {
                          // close() left the buffers to this handler: the write was using them.
                          self->out_.clear();
                          return;
                        }
                        if (ec) {
                          self->client_gone();
                          return;
                        }
                        self->out_.pop_front();
                        if (!self->out_.empty())
                          self->write_next();
                        else if (self->end_pending_)
                          self->response_written();
                      });
  }

  void response_written() {
    if (!responding_ || closed_) return;
    responding_ = false;
    set_active(false);
    end_pending_ = false;
    current_.reset();
    if (close_after_) {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      close();
      return;
    }
    if (watch_pending_) {
      beast::error_code ignored;
      stream_.socket().cancel(ignored);  // the watch's handler starts the next read
    } else {
      read_request();
    }
  }

  void client_gone() {
    if (closed_) return;
    auto exchange = current_.lock();
    close();
    if (exchange) exchange->notify_disconnect();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    set_active(false);
    if (!writing_) out_.clear();  // else the pending write still reads out_.front()
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  const HttpServerOptions& options_;
  const HttpHandler& handler_;
  HttpCounters& counters_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;
  std::weak_ptr<HttpExchange> current_;
  bool writing_ = false, watch_pending_ = false, responding_ = false;
  bool end_pending_ = false, close_after_ = false, closed_ = false, active_ = false;
};

HttpExchange::HttpExchange(std::shared_ptr<HttpSession> session) : session_(std::move(session)) {}

HttpExchange::~HttpExchange() {
  if (done_) return;
  // A handler that dropped its exchange unanswered must not hang the connection. The
  // last owner may be another thread, so the session is touched on its strand only.
  bool started = started_;
  asio::post(session_->executor(), [session = session_, started] {
    if (!session->closed()) {
      if (!started) {
        std::string body = "no response\n";
        session->queue_write(
            status_line(500) +
            fmt::format("Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.size()) +
            body);
      } else {
        session->queue_write("0\r\n\r\n");
      }
      session->finish_response(false);
    }
  });
}

// Exchange methods may be called from any thread (handlers can run on worker threads):
// each runs on the connection's strand, at once when already there.
void HttpExchange::on_strand(std::function<void()> fn) {
  asio::any_io_executor executor = session_->executor();
  auto strand = executor.target<asio::strand<asio::io_context::executor_type>>();
  if (strand && strand->running_in_this_thread())
    fn();
  else
    asio::post(session_->executor(), std::move(fn));
}

void HttpExchange::respond(int status, const std::string& content_type, std::string body) {
  on_strand([self = shared_from_this(), status, content_type, body = std::move(body)]() mutable {
    if (self->started_ || self->done_) return;
    self->started_ = self->done_ = true;
    if (self->session_->closed()) return;
    std::string head = status_line(status) +
                       fmt::format("Content-Type: {}\r\nContent-Length: {}\r\n{}{}\r\n",
                                   content_type, body.size(), self->extra_headers_,
                                   self->session_->close_after() ? "Connection: close\r\n" : "");
    self->session_->queue_write(head + body);
    self->session_->finish_response(false);
  });
}

void HttpExchange::add_header(const std::string& name, const std::string& value) {
  if (started_) return;
  extra_headers_ += name + ": " + value + "\r\n";
}

void HttpExchange::start_stream(int status, const std::string& content_type) {
  on_strand([self = shared_from_this(), status, content_type] {
    if (self->started_ || self->done_) return;
    self->started_ = true;
    if (self->session_->closed()) return;
    self->session_->queue_write(
        status_line(status) +
        fmt::format("Content-Type: {}\r\nCache-Control: no-cache\r\n"
                    "Transfer-Encoding: chunked\r\n{}{}\r\n",
                    content_type, self->extra_headers_,
                    self->session_->close_after() ? "Connection: close\r\n" : ""));
  });
}

void HttpExchange::write(std::string data) {
  on_strand([self = shared_from_this(), data = std::move(data)] {
    if (!self->started_ || self->done_ || data.empty() || self->session_->closed()) return;
    self->session_->queue_write(fmt::format("{:x}\r\n", data.size()) + data + "\r\n");
  });
}

void HttpExchange::end_stream() {
  on_strand([self = shared_from_this()] {
    if (!self->started_ || self->done_) return;
    self->done_ = true;
    if (self->session_->closed()) return;
    self->session_->queue_write("0\r\n\r\n");
    self->session_->finish_response(false);
  });
}

void HttpExchange::post(std::function<void()> fn) {
  asio::post(session_->executor(), std::move(fn));
}

void HttpExchange::on_disconnect(std::function<void()> fn) {
  on_strand([self = shared_from_this(), fn = std::move(fn)]() mutable {
    // The client may have left while the handler was still working on a worker thread.
    if (self->disconnected_)
      fn();
    else
      self->on_disconnect_ = std::move(fn);
  });
}

bool HttpExchange::closed() const { return session_->closed(); }

void HttpExchange::notify_disconnect() {
  disconnected_ = true;
  if (done_) return;
  done_ = true;
  if (auto fn = std::move(on_disconnect_)) fn();
}

struct HttpServer::Impl {
  // Declared before the io_context: sessions still queued in it when it is destroyed
  // use these in their destructors.
  HttpOptionsHolder holder;
  HttpCounters counters;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::chrono::steady_clock::time_point last_accept_warning{};
  int64_t accept_warnings_skipped = 0;

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) {
        auto session = std::make_shared<HttpSession>(std::move(socket), holder.options,
                                                     holder.handler, counters);
        const int64_t limit = holder.options.max_connections;
        if (limit > 0 && counters.connections.load() > limit)
          session->refuse();
        else
          session->start();
      } else {
        warn_accept_failure(ec);
        if (ec == asio::error::no_descriptors) {
          // Out of file descriptors: back off briefly instead of spinning.
          auto timer = std::make_shared<asio::steady_timer>(ioc, std::chrono::milliseconds(50));
          timer->async_wait([this, timer](beast::error_code) { accept(); });
          return;
        }
      }
      accept();
    });
  }

  // At most one line every 10 s: a flood must not turn into a flood of log lines.
  void warn_accept_failure(const beast::error_code& ec) {
    auto now = std::chrono::steady_clock::now();
    if (now - last_accept_warning < std::chrono::seconds(10)) {
      ++accept_warnings_skipped;
      return;
    }
    spdlog::warn("accept failed: {} ({} more failures not logged; see --max-connections)",
                 ec.message(), accept_warnings_skipped);
    last_accept_warning = now;
    accept_warnings_skipped = 0;
  }
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : impl_(std::make_unique<Impl>()) {
  impl_->holder.options = std::move(options);
  impl_->holder.handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->holder.options.host, ec);
  RELAYLLM_CHECK(!ec, "--host '{}': not an IP address ({})", impl_->holder.options.host,
                 ec.message());
  tcp::endpoint endpoint(address, impl_->holder.options.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  RELAYLLM_CHECK(!ec, "cannot open a socket: {}", ec.message());
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor.bind(endpoint, ec);
  RELAYLLM_CHECK(!ec, "cannot bind {}:{}: {}", impl_->holder.options.host,
                 impl_->holder.options.port, ec.message());
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  RELAYLLM_CHECK(!ec, "cannot listen on {}:{}: {}", impl_->holder.options.host,
                 impl_->holder.options.port, ec.message());
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->accept();
  for (int i = 0; i < std::max(1, impl_->holder.options.num_threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

void HttpServer::stop_accepting() {
  impl_->counters.draining = true;
  if (impl_->threads.empty()) return;
  asio::post(impl_->ioc, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
}

int64_t HttpServer::num_active_requests() const { return impl_->counters.active.load(); }
int64_t HttpServer::num_connections() const { return impl_->counters.connections.load(); }

void HttpServer::stop() {
  if (impl_->threads.empty()) return;
  asio::post(impl_->ioc, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->work.reset();
  impl_->ioc.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto endpoint = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

}  // namespace relayllm
