#include "train/story_grammar.h"

#include <cctype>
#include <map>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace llmopt::train {

uint64_t StoryRng::next() {
  state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

namespace {

// Templates use a tiny notation: "[a|b|c]" picks one alternative (nesting allowed), "{key}"
// inserts a slot of the current story, itself expanded as a template (so a slot holding
// "[tree|rock]" is re-drawn at every use, while a slot holding "Lily" is fixed for the story).
// "{Key}" with a capital first letter inserts slot "key" with its first letter capitalised.
using Slots = std::map<std::string, std::string, std::less<>>;

class TemplateExpander {
 public:
  TemplateExpander(StoryRng& rng, const Slots& slots) : rng_(rng), slots_(slots) {}

  std::string expand(std::string_view text) {
    std::string out;
    size_t i = 0;
    while (i < text.size()) {
      const char c = text[i];
      if (c == '[') {
        const size_t end = matching_bracket(text, i);
        const std::vector<std::string_view> options = split_alternatives(text.substr(i + 1, end - i - 1));
        out += expand(options[rng_.below(options.size())]);
        i = end + 1;
      } else if (c == '{') {
        const size_t end = text.find('}', i);
        LLMOPT_ASSERT(end != std::string_view::npos, "unterminated slot in template '{}'", text);
        out += slot(text.substr(i + 1, end - i - 1));
        i = end + 1;
      } else {
        out += c;
        ++i;
      }
    }
    return out;
  }

 private:
  static size_t matching_bracket(std::string_view text, size_t open) {
    int depth = 0;
    for (size_t i = open; i < text.size(); ++i) {
      if (text[i] == '[') ++depth;
      if (text[i] == ']' && --depth == 0) return i;
    }
    LLMOPT_ASSERT(false, "unbalanced '[' in template '{}'", text);
    return text.size();
  }

  static std::vector<std::string_view> split_alternatives(std::string_view body) {
    std::vector<std::string_view> parts;
    int depth = 0;
    size_t start = 0;
    for (size_t i = 0; i < body.size(); ++i) {
      if (body[i] == '[') ++depth;
      if (body[i] == ']') --depth;
      if (body[i] == '|' && depth == 0) {
        parts.push_back(body.substr(start, i - start));
        start = i + 1;
      }
    }
    parts.push_back(body.substr(start));
    return parts;
  }

  std::string slot(std::string_view key) {
    if (auto it = slots_.find(key); it != slots_.end()) return expand(it->second);
    LLMOPT_ASSERT(!key.empty() && std::isupper(static_cast<unsigned char>(key[0])),
                  "story grammar uses unknown slot '{}'", key);
    std::string lower(key);
    lower[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[0])));
    auto it = slots_.find(lower);
    LLMOPT_ASSERT(it != slots_.end(), "story grammar uses unknown slot '{}'", key);
    std::string value = expand(it->second);
    if (!value.empty()) value[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(value[0])));
    return value;
  }

  StoryRng& rng_;
  const Slots& slots_;
};

template <size_t N>
const char* pick(StoryRng& rng, const char* const (&options)[N]) {
  return options[rng.below(N)];
}

const char* const kGirlNames[] = {"Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Sara", "Amy",
                                  "Zoe", "Ella", "Kitty", "Daisy", "Rosie", "Molly", "Jane", "Ruby",
                                  "Lola", "Nina", "Maya", "Sophie"};
const char* const kBoyNames[] = {"Tim", "Ben", "Max", "Tom", "Sam", "Jack", "Leo", "Bob", "Timmy",
                                 "Joe", "Finn", "Spot", "Buddy", "Jake", "Billy", "Sammy", "Lucas",
                                 "Noah", "Ollie", "Teddy"};
const char* const kPersonKinds[] = {"girl", "boy"};
const char* const kAnimalKinds[] = {"dog",   "cat",   "bunny", "bird",     "bear",  "fox",
                                    "frog",  "duck",  "mouse", "puppy",    "kitten", "owl",
                                    "squirrel", "lion", "pig",  "elephant"};
const char* const kTraits[] = {"little", "happy", "kind", "brave", "curious", "small",
                               "shy",    "funny", "silly", "smart", "friendly", "playful"};
const char* const kObjects[] = {"ball",   "kite",  "doll",    "teddy bear", "toy car", "hat",
                                "book",   "balloon", "boat",  "drum",       "truck",   "blanket",
                                "ribbon", "train", "robot",   "shovel",     "umbrella", "crayon"};
const char* const kObjectColors[] = {"red",  "blue",  "green", "yellow", "pink", "purple",
                                     "big",  "little", "shiny", "soft",  "new",  "old", "orange"};
const char* const kPlaces[] = {"park", "garden", "forest", "beach", "playground", "yard",
                               "meadow", "hill", "pond", "zoo"};
const char* const kParents[] = {"mom", "dad", "mom", "dad", "grandma", "grandpa"};
const char* const kFoods[] = {"cake", "pie", "sandwich", "muffin", "pizza", "soup"};

// Slot values drawn afresh at every use.
constexpr const char* kThing =
    "[tree|bush|big rock|bench|box|bed|table|slide|pile of leaves|flower pot|old log]";
constexpr const char* kActivity =
    "[play with {his} toys|run in the {place}|draw pictures|sing songs|read books|dance|play "
    "outside|climb trees|jump in puddles|build with blocks|look at the stars|help {his} {parent}|"
    "play with {his} {obj}]";
constexpr const char* kGame = "[play|play tag|run|dance|sing|play hide and seek|look for bugs]";

void add_character(Slots& slots, StoryRng& rng, const std::string& prefix, const std::string& avoid) {
  const bool female = rng.chance(50);
  std::string name;
  do {
    name = female ? pick(rng, kGirlNames) : pick(rng, kBoyNames);
  } while (name == avoid);
  slots[prefix + "name"] = name;
  slots[prefix + "kind"] = rng.chance(55) ? (female ? "girl" : "boy") : pick(rng, kAnimalKinds);
  slots[prefix + "adj"] = pick(rng, kTraits);
  slots[prefix + "he"] = female ? "she" : "he";
  slots[prefix + "him"] = female ? "her" : "him";
  slots[prefix + "his"] = female ? "her" : "his";
  slots[prefix + "himself"] = female ? "herself" : "himself";
}

Slots make_story_slots(StoryRng& rng) {
  Slots slots;
  add_character(slots, rng, "", "");
  add_character(slots, rng, "f", slots["name"]);
  slots["obj"] = pick(rng, kObjects);
  slots["color"] = pick(rng, kObjectColors);
  slots["place"] = pick(rng, kPlaces);
  slots["parent"] = pick(rng, kParents);
  slots["food"] = pick(rng, kFoods);
  slots["trait"] = pick(rng, kTraits);
  slots["thing"] = kThing;
  slots["act"] = kActivity;
  slots["game"] = kGame;
  return slots;
}

// Each plot is a list of sentence templates; "\n\n" marks a place where a paragraph may break.
using Plot = std::vector<const char*>;

const Plot kLostPlot = {
    "One day, {name} [went|walked|ran] to the {place} with {his} {color} {obj}.",
    "{He} [played|ran and jumped|had fun] [all morning|for a long time|with {his} {obj}].",
    "But when {he} looked [down|around|back], the {obj} was gone!",
    "{Name} was very [sad|worried|upset]. {He} [started to cry|looked everywhere|did not know what "
    "to do].",
    "\n\n",
    "Then, a {fadj} {fkind} named {fname} came [by|over|to {him}].",
    "\"Why are you [sad|crying], {name}?\" [asked|said] {fname}.",
    "\"I lost my {obj},\" said {name}. \"[It is my favorite toy.|I can not find it anywhere.]\"",
    "\"Don't worry, I will help you [find it|look for it],\" said {fname}.",
    "They looked [under|behind|near] the {thing} and [under|behind|near] the {thing}.",
    "[At last|Soon|After a while], {fname} found the {obj} [under|behind|near] a {thing}!",
    "{Name} was so happy. \"Thank you, {fname}!\" {he} said.",
    "\n\n",
};

const Plot kSharingPlot = {
    "{Name} had a {color} {obj}. It was {his} favorite toy.",
    "One day, {name} took {his} {obj} to the {place}.",
    "There, {he} met a {fadj} {fkind} named {fname}.",
    "{Fname} [saw|looked at] the {obj} and said, \"Can I play with your {obj}, please?\"",
    "{Name} did not want to share. \"No, it is mine!\" {he} said.",
    "{Fname} felt sad and [walked away|sat down alone|looked at the ground].",
    "\n\n",
    "Soon, {name} [felt bad|was not happy anymore|felt lonely]. {He} [thought about|remembered] "
    "what {his} {parent} said about sharing.",
    "{He} [went|ran] to {fname} and said, \"I am sorry. [You can play with my {obj} too.|Let's play "
    "with my {obj} together.]\"",
    "{Fname} smiled. They played with the {obj} [all day|until the sun went down|together].",
    "{Name} learned that sharing [is good|makes everyone happy|is fun].",
};

const Plot kStormPlot = {
    "One night, there was a big storm. The wind [was loud|blew hard] and the rain [fell|came down] "
    "[hard|on the roof].",
    "{Name} was [scared|afraid]. {He} [hid under {his} blanket|ran to {his} {parent}|held {his} "
    "{obj} tight].",
    "{His} {parent} [came in|sat on the bed] and said, \"Don't be scared, {name}. The storm [will go "
    "away soon|can not hurt you].\"",
    "{Parent} [gave {him} a big hug|sang a soft song|told {him} a story].",
    "\n\n",
    "Soon, {name} [felt better|was not scared anymore|fell asleep].",
    "In the morning, the sun was [bright|shining] and the sky was blue.",
    "{Name} [went outside|ran to the {place}] and saw a [big|pretty] rainbow.",
    "{Name} learned that [storms do not last forever|it is okay to be scared sometimes|{his} "
    "{parent} will always help {him}].",
};

const Plot kTreePlot = {
    "One [sunny|windy] day, {name} was playing with {his} {color} {obj} in the {place}.",
    "{He} threw the {obj} [high|up] in the air. [Oh no!|Oops!] The {obj} got stuck in a [tall|big] "
    "tree.",
    "{Name} tried to jump, but {he} was too [small|little]. {He} felt [sad|angry|upset].",
    "\n\n",
    "Then {fname} the {fkind} came by. \"[Don't be sad|Don't worry], {name}! [I can help|Let me help "
    "you],\" said {fname}.",
    "{Fname} [climbed up the tree|got a long stick|shook the tree] and the {obj} fell down.",
    "{Name} [clapped|jumped up and down] and said, \"Thank you, {fname}! You are a good friend.\"",
};

const Plot kGiftPlot = {
    "One day, {name} wanted to make a [gift|surprise] for {his} {parent}.",
    "{He} [thought and thought|looked around the house]. Then {he} had an idea. {He} would "
    "[make|bake] a {food}!",
    "{Name} got [flour|sugar|eggs|milk], [butter|apples|eggs|milk] and a big bowl.",
    "{He} mixed and mixed. [The kitchen got very messy.|Some flour fell on the floor.|{He} got flour "
    "on {his} nose.]",
    "\n\n",
    "When {his} {parent} came home, {name} said, \"Surprise! I made a {food} for you!\"",
    "{Parent} [smiled|laughed|hugged {him}]. \"Thank you, {name}. [It is the best {food} ever!|I "
    "love it!|You are so kind.]\"",
    "Together, they [cleaned the kitchen|ate the {food}|shared the {food}].",
    "{Name} felt [proud|happy|warm inside].",
};

const Plot kNewFriendPlot = {
    "{Name} [moved to|lived in] a new [house|town] near the {place}. {He} did not have any friends "
    "[yet|there].",
    "One day, {he} went to the {place} [alone|by {himself}].",
    "{He} saw a {fadj} {fkind} [sitting|playing] [by the {thing}|under a tree|near the {thing}].",
    "\"Hi, I am {name},\" said {name}. \"What is your name?\"",
    "\"My name is {fname},\" said the {fkind}. \"Do you want to {game} with me?\"",
    "\n\n",
    "{Name} and {fname} [played|ran|laughed] [all day|until it was time to go home].",
};

const Plot kWarningPlot = {
    "One day, {name} and {his} {parent} went to the [lake|river|beach|farm|market].",
    "\"[Stay close to me|Do not go near the water|Do not run too far], {name},\" said {his} "
    "{parent}.",
    "But {name} saw a [pretty butterfly|big frog|shiny stone|little duck] and [ran away|went off "
    "alone].",
    "{He} [slipped and fell|got lost|got very wet]. {He} started to cry.",
    "\n\n",
    "{His} {parent} [found {him}|ran to {him}] and [picked {him} up|gave {him} a hug].",
    "\"I am sorry,\" said {name}. \"I should have listened.\"",
    "{Name} learned to [listen to {his} {parent}|be careful]. [After that|From then on], {he} always "
    "[stayed close|listened].",
};

const char* const kOpenings[] = {
    "Once upon a time, there was a {adj} {kind} named {name}.",
    "Once upon a time, in a [small|big|quiet|sunny] [town|village|house|forest], there lived a {adj} "
    "{kind} named {name}.",
    "There was once a {adj} {kind}. {His} name was {name}.",
    "Once upon a time, there was a {kind} called {name}. {He} was very {trait}.",
};

const char* const kTraitSentences[] = {
    "{He} [liked|loved] to {act}.",
    "{Name} had a {color} {obj}. {He} loved {his} {obj} very much.",
    "Every day, {he} [played with|took care of] {his} {color} {obj}.",
    "{He} was [very|always] {trait} and [liked|loved] to {act}.",
};

const char* const kFillers[] = {
    "The sun was [warm|bright] and the birds were singing.",
    "{He} [smiled|laughed|looked around].",
    "It was a [beautiful|sunny|nice] day.",
};

const char* const kEndings[] = {
    "From that day on, {name} and {fname} were best friends.",
    "They were very happy. The end.",
    "And they [played together every day|lived happily ever after].",
    "{Name} went home and told {his} {parent} all about it.",
    "{Name} [smiled|was happy]. It was the best day ever.",
};

const Plot* const kPlots[] = {&kLostPlot,  &kSharingPlot,   &kStormPlot,  &kTreePlot,
                              &kGiftPlot, &kNewFriendPlot, &kWarningPlot};

// "a apple" -> "an apple": the article is decided after expansion, from the next word.
std::string fix_articles(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  for (size_t i = 0; i < text.size(); ++i) {
    out += text[i];
    const bool word_a = (text[i] == 'a' || text[i] == 'A') &&
                        (i == 0 || !std::isalpha(static_cast<unsigned char>(text[i - 1])));
    if (word_a && i + 2 < text.size() && text[i + 1] == ' ' &&
        std::string_view("aeiou").find(text[i + 2]) != std::string_view::npos) {
      out += 'n';
    }
  }
  return out;
}

}  // namespace

std::string generate_story(StoryRng& rng) {
  const Slots slots = make_story_slots(rng);
  TemplateExpander expander(rng, slots);
  std::string story;
  auto add_sentence = [&](const char* sentence_template) {
    if (std::string_view(sentence_template) == "\n\n") {
      // Paragraph breaks are optional so both one- and multi-paragraph stories occur.
      if (!story.empty() && story.back() != '\n' && rng.chance(60)) story += "\n\n";
      return;
    }
    if (!story.empty() && story.back() != '\n') story += ' ';
    story += expander.expand(sentence_template);
  };
  add_sentence(pick(rng, kOpenings));
  add_sentence(pick(rng, kTraitSentences));
  if (rng.chance(30)) add_sentence(pick(rng, kFillers));
  const Plot& plot = *kPlots[rng.below(std::size(kPlots))];
  for (const char* sentence_template : plot) add_sentence(sentence_template);
  if (rng.chance(70)) add_sentence(pick(rng, kEndings));
  while (!story.empty() && (story.back() == '\n' || story.back() == ' ')) story.pop_back();
  return fix_articles(story);
}

std::string generate_stories(uint64_t seed, size_t min_bytes) {
  StoryRng rng(seed);
  std::string text;
  while (text.size() < min_bytes) {
    if (!text.empty()) text += "\n\n";
    text += generate_story(rng);
  }
  text += '\n';
  return text;
}

}  // namespace llmopt::train
