#include "relayllm/server/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <optional>

#include "relayllm/common/error.h"

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

}  // namespace

// One TCP connection: reads a request, hands it to the handler, writes the
// response (whole or chunked), then reads the next one. While a response is
// pending, a one-byte-or-more read watches the socket so that a client that
// hangs up is noticed even when nothing is being written.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(tcp::socket socket, const HttpServerOptions& options, const HttpHandler& handler)
      : stream_(std::move(socket)), options_(options), handler_(handler) {}

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read_request(); });
  }

  asio::any_io_executor executor() { return stream_.get_executor(); }
  bool closed() const { return closed_; }

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
  void read_request() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(options_.idle_timeout_s));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->on_request(ec);
                     });
  }

  void on_request(beast::error_code ec) {
    stream_.expires_never();
    if (ec == http::error::body_limit) {
      reply_error_and_close(413, fmt::format("request body exceeds the limit of {} bytes",
                                             options_.max_body_bytes));
      return;
    }
    if (ec == http::error::header_limit) {
      reply_error_and_close(431, "request headers are too large");
      return;
    }
    if (ec) {
      if (ec != http::error::end_of_stream && ec != asio::error::operation_aborted &&
          ec != beast::error::timeout && ec != asio::error::connection_reset && ec != asio::error::eof &&
          ec != http::error::partial_message)
        reply_error_and_close(400, fmt::format("malformed HTTP request: {}", ec.message()));
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
    close_after_ = !msg.keep_alive();
    end_pending_ = false;
    responding_ = true;
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

  void reply_error_and_close(int status, const std::string& message) {
    std::string body = fmt::format(R"({{"error":{{"message":"{}","type":"{}","code":{}}}}})",
                                   message, status == 413 ? "request_too_large" : "invalid_request_error",
                                   status);
    responding_ = true;
    current_.reset();
    queue_write(status_line(status) +
                fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n"
                            "Connection: close\r\n\r\n",
                            body.size()) +
                body);
    finish_response(true);
  }

  void watch_socket() {
    if (watch_pending_) return;
    watch_pending_ = true;
    stream_.socket().async_read_some(
        buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
          self->watch_pending_ = false;
          if (!ec) {
            // A pipelined request: keep its bytes for the next read.
            self->buffer_.commit(n);
            if (!self->responding_) self->read_request();
            return;
          }
          if (ec == asio::error::operation_aborted) {
            if (!self->responding_ && !self->closed_) self->read_request();
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
    if (!writing_) out_.clear();  // else the pending write still reads out_.front()
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  const HttpServerOptions& options_;
  const HttpHandler& handler_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::deque<std::string> out_;
  std::weak_ptr<HttpExchange> current_;
  bool writing_ = false, watch_pending_ = false, responding_ = false;
  bool end_pending_ = false, close_after_ = false, closed_ = false;
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
        session->queue_write(status_line(500) +
                             fmt::format("Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                                         body.size()) + body);
      } else {
        session->queue_write("0\r\n\r\n");
      }
      session->finish_response(false);
    }
  });
}

void HttpExchange::respond(int status, const std::string& content_type, std::string body) {
  if (started_ || done_) return;
  started_ = done_ = true;
  if (session_->closed()) return;
  std::string head = status_line(status) +
                     fmt::format("Content-Type: {}\r\nContent-Length: {}\r\n{}\r\n", content_type,
                                 body.size(), extra_headers_);
  session_->queue_write(head + body);
  session_->finish_response(false);
}

void HttpExchange::add_header(const std::string& name, const std::string& value) {
  if (started_) return;
  extra_headers_ += name + ": " + value + "\r\n";
}

void HttpExchange::start_stream(int status, const std::string& content_type) {
  if (started_ || done_) return;
  started_ = true;
  if (session_->closed()) return;
  session_->queue_write(status_line(status) +
                        fmt::format("Content-Type: {}\r\nCache-Control: no-cache\r\n"
                                    "Transfer-Encoding: chunked\r\n{}\r\n",
                                    content_type, extra_headers_));
}

void HttpExchange::write(std::string data) {
  if (!started_ || done_ || data.empty() || session_->closed()) return;
  session_->queue_write(fmt::format("{:x}\r\n", data.size()) + data + "\r\n");
}

void HttpExchange::end_stream() {
  if (!started_ || done_) return;
  done_ = true;
  if (session_->closed()) return;
  session_->queue_write("0\r\n\r\n");
  session_->finish_response(false);
}

void HttpExchange::post(std::function<void()> fn) {
  asio::post(session_->executor(), std::move(fn));
}

void HttpExchange::on_disconnect(std::function<void()> fn) { on_disconnect_ = std::move(fn); }

bool HttpExchange::closed() const { return session_->closed(); }

void HttpExchange::notify_disconnect() {
  if (done_) return;
  done_ = true;
  if (auto fn = std::move(on_disconnect_)) fn();
}

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      if (!ec) {
        std::make_shared<HttpSession>(std::move(socket), options, handler)->start();
      } else {
        spdlog::warn("accept failed: {}", ec.message());
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
};

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->options.host, ec);
  RELAYLLM_CHECK(!ec, "--host '{}': not an IP address ({})", impl_->options.host, ec.message());
  tcp::endpoint endpoint(address, impl_->options.port);
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  RELAYLLM_CHECK(!ec, "cannot open a socket: {}", ec.message());
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor.bind(endpoint, ec);
  RELAYLLM_CHECK(!ec, "cannot bind {}:{}: {}", impl_->options.host, impl_->options.port, ec.message());
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  RELAYLLM_CHECK(!ec, "cannot listen on {}:{}: {}", impl_->options.host, impl_->options.port,
                 ec.message());
  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->accept();
  for (int i = 0; i < std::max(1, impl_->options.num_threads); ++i)
    impl_->threads.emplace_back([this] { impl_->ioc.run(); });
}

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
