#include "relayllm/engine/stop_checker.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "relayllm/common/error.h"

namespace relayllm {
namespace {

// Feeds pieces one by one, as the engine does; returns the final text and the matched stop index.
struct Fed {
  std::string text;
  int stop_index = -1;
};

Fed feed(const StopChecker& checker, const std::vector<std::string>& pieces) {
  Fed r;
  for (const std::string& piece : pieces) {
    r.text += piece;
    if (auto m = checker.apply(r.text, piece.size())) {
      r.stop_index = int(m->stop_index);
      EXPECT_EQ(m->stop, checker.stops()[m->stop_index]);
      break;
    }
  }
  return r;
}

TEST(StopChecker, StopStringSpanningPieces) {
  StopChecker checker({"###"}, false);
  Fed r = feed(checker, {"Hello #", "#", "# world", "never seen"});
  EXPECT_EQ(r.text, "Hello ");
  EXPECT_EQ(r.stop_index, 0);
  // No match: the text is left alone.
  r = feed(checker, {"a#", "#b", "##"});
  EXPECT_EQ(r.text, "a##b##");
  EXPECT_EQ(r.stop_index, -1);
}

TEST(StopChecker, OnlyMatchesEndingInTheNewBytesCount) {
  StopChecker checker({"STOP"}, false);
  // "STOP" lies wholly in old text (it was checked when it arrived): not reported again.
  EXPECT_FALSE(checker.check("xSTOPyz", 2));
  auto m = checker.check("xSTOPyz", 3);  // "P" is new: the match ends in the new bytes
  ASSERT_TRUE(m);
  EXPECT_EQ(m->text_length, 1u);
  EXPECT_FALSE(checker.check("STOP", 0));
  // new_bytes larger than the text means all of it is new.
  ASSERT_TRUE(checker.check("STOP", 100));
}

TEST(StopChecker, EarliestEndingStopWins) {
  StopChecker checker({"world", "lo"}, false);
  Fed r = feed(checker, {"Hello world"});
  EXPECT_EQ(r.text, "Hel");
  EXPECT_EQ(r.stop_index, 1);
  // List order does not matter.
  StopChecker reversed({"lo", "world"}, false);
  r = feed(reversed, {"Hello world"});
  EXPECT_EQ(r.text, "Hel");
  EXPECT_EQ(r.stop_index, 0);
  // The one a byte-by-byte stream would hit first: "y" completes before "xyz".
  StopChecker nested({"xyz", "y"}, false);
  EXPECT_EQ(feed(nested, {"axyzb"}).text, "ax");
  std::vector<std::string> bytes;
  for (char ch : std::string("axyzb")) bytes.emplace_back(1, ch);
  EXPECT_EQ(feed(nested, bytes).text, "ax");
  // Ending together: the longer (earlier-starting) one.
  StopChecker same_end({"b", "ab"}, false);
  r = feed(same_end, {"xab"});
  EXPECT_EQ(r.text, "x");
  EXPECT_EQ(r.stop_index, 1);
}

TEST(StopChecker, IncludeStopStringInOutput) {
  StopChecker checker({"END"}, true);
  Fed r = feed(checker, {"abcE", "NDxyz"});
  EXPECT_EQ(r.text, "abcEND");
  EXPECT_EQ(checker.hold_back("abcEN"), 0u);
}

TEST(StopChecker, HoldBackForStreaming) {
  StopChecker checker({"</s>", "\n\n"}, false);
  EXPECT_EQ(checker.hold_back(""), 0u);
  EXPECT_EQ(checker.hold_back("abc"), 0u);
  EXPECT_EQ(checker.hold_back("abc<"), 1u);
  EXPECT_EQ(checker.hold_back("abc</"), 2u);
  EXPECT_EQ(checker.hold_back("abc</s"), 3u);
  EXPECT_EQ(checker.hold_back("abc</x"), 0u);
  EXPECT_EQ(checker.hold_back("<<"), 1u);
  EXPECT_EQ(checker.hold_back("line\n"), 1u);
  EXPECT_EQ(checker.hold_back("</"), 2u);
  EXPECT_EQ(checker.max_stop_length(), 4u);
  EXPECT_EQ(StopChecker().hold_back("abc<"), 0u);
}

TEST(StopChecker, Utf8StopAcrossByteSplitPieces) {
  const std::string stop = "\xE3\x80\x82";  // U+3002 ideographic full stop
  StopChecker checker({stop}, false);
  Fed r = feed(checker, {"abc\xE3", "\x80", "\x82tail"});
  EXPECT_EQ(r.text, "abc");
  EXPECT_EQ(checker.hold_back("abc\xE3\x80"), 2u);
}

TEST(StopChecker, RejectsEmptyStopString) { EXPECT_THROW(StopChecker({"a", ""}, false), Error); }

TEST(StopChecker, FromSamplingParams) {
  SamplingParams p;
  p.stop = {"Q:"};
  p.include_stop_str_in_output = true;
  StopChecker checker(p);
  EXPECT_EQ(feed(checker, {"A: 1\nQ: 2"}).text, "A: 1\nQ:");
}

// The streaming protocol from the header, over random piece splits: what is sent is always a
// prefix of the final text, the final text is the same for every split, and it equals cutting
// the whole text at the first stop.
TEST(StopChecker, StreamingNeverSendsWhatIsLaterCut) {
  const std::vector<std::string> stops = {"<|end|>", "\n\nUser:", "!!", "ab"};
  const std::string full = "Sure! Here <|en it is: a <| b\n\nUse x!a b\n\nUser: more <|end|> x";
  for (bool include : {false, true}) {
    StopChecker checker(stops, include);
    const Fed whole = feed(checker, {full});
    ASSERT_NE(whole.stop_index, -1);
    std::mt19937 gen(include ? 1 : 2);
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<std::string> pieces;
      for (size_t at = 0; at < full.size();) {
        size_t len = std::uniform_int_distribution<size_t>(1, 6)(gen);
        pieces.push_back(full.substr(at, len));
        at += len;
      }
      std::string text, sent;
      bool stopped = false;
      for (const std::string& piece : pieces) {
        text += piece;
        if (auto m = checker.check(text, piece.size())) {
          ASSERT_LE(sent.size(), m->text_length);
          text.resize(m->text_length);
          sent += text.substr(sent.size());
          stopped = true;
          break;
        }
        const size_t ready = text.size() - checker.hold_back(text);
        ASSERT_GE(ready, sent.size());
        sent += text.substr(sent.size(), ready - sent.size());
        ASSERT_EQ(text.compare(0, sent.size(), sent), 0);
      }
      ASSERT_TRUE(stopped);
      EXPECT_EQ(sent, whole.text);
    }
  }
}

}  // namespace
}  // namespace relayllm
