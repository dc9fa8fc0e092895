"""Write the example's data: a small web crawl, a reference set, a word list and a chat set.

    python examples/own_data/make_corpus.py              # rewrites the files beside this script
    python examples/own_data/make_corpus.py --out DIR    # or writes them under DIR

Everything is generated from the word lists and sentence templates below with a fixed
seed and a PRNG of our own, so the output does not depend on the Python version, the
platform or the network: running it again gives the committed files byte for byte (the
gzip container is written with mtime 0 and no file name; its compressed bytes can still
differ under another zlib build, its content cannot).

What is in the crawl (three monthly snapshots of three fictional sites, as JSONL.gz with
the field names of a crawler's dump: `content`, `meta.url`, `fetched_at`):

- news articles, recipes and forum threads, each page wrapped in its site's navigation and
  footer (boilerplate lines that `dedup lines` removes);
- pages fetched again in a later snapshot under the same URL, spelled differently
  (`dedup url` keeps the newest), and copies under another URL with only case and spacing
  changed (`dedup exact`);
- the mobile site's copies of articles, with another byline (`dedup minhash`);
- spam pages that use the words in `words.txt` (`filter dirty_words`);
- error and stub pages of a few words (`filter length`);
- keyword-stuffed pages that read like no document in `reference/` (`quality ngram_logreg`).

Beside the crawl: `reference/good.jsonl` (clean texts the quality classifier learns good
text from), `words.txt` (the blocklist) and `chat.jsonl` (calendar questions and answers
in the `messages` format, for SFT).

The ids say what each planted document is (`*-recrawl-*`, `*-copy-*`, `*-mobile-*`,
`spam-*`, `stub-*`, `seo-*`); tests/examples/ checks the pipeline removes them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2024
NEWS_PER_MONTH, RECIPES_PER_MONTH, THREADS_PER_MONTH = 60, 40, 36  # pages per snapshot
JUNK = 40  # keyword-stuffed pages, over the three snapshots
REF_NEWS, REF_RECIPES, REF_THREADS = 5, 16, 5  # reference texts: per news topic, recipes, per forum topic


class Rng:
    """splitmix64: tiny, fast and the same on every Python (unlike `random`'s helpers)."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def between(self, lo: int, hi: int) -> int:
        return lo + self.below(hi - lo + 1)

    def choice(self, items):
        return items[self.below(len(items))]

    def sample(self, items, k: int) -> list:
        pool = list(items)
        self.shuffle(pool)
        return pool[:k]

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


# -- the world ------------------------------------------------------------------------------

FIRST = ["Anna", "Ben", "Clara", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Ines", "James",
         "Keiko", "Liam", "Maya", "Noah", "Olga", "Pavel", "Rosa", "Samir", "Tessa", "Victor",
         "Wen", "Yusuf", "Zoe", "Marta", "Oscar", "Priya", "Tomas", "Leila", "Erik", "Nadia"]
LAST = ["Adams", "Brennan", "Castillo", "Dubois", "Eriksen", "Fischer", "Gallagher", "Hale",
        "Iqbal", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov",
        "Quinn", "Rahman", "Santos", "Tanaka", "Ueda", "Varga", "Whitfield", "Young", "Zeller"]
PLACES = ["the market square", "Riverside Park", "the old mill", "the community hall",
          "the public library", "the harbour", "the town hall", "the leisure centre",
          "North Bridge", "the railway station", "the primary school", "the bowling green"]
STREETS = ["Station Road", "Hill Street", "Elm Grove", "the high street", "Church Lane",
           "Mill Lane", "Bridge Street", "Queen's Road", "Market Row", "Orchard Way"]
TEAMS = ["Millbrook Rovers", "Ashford Town", "Kestrel Vale", "Dunmore United", "Larkfield FC",
         "Stonebridge Athletic", "Corran Harriers", "Westmere City"]
BUSINESSES = ["a bakery", "a bicycle repair shop", "a bookshop", "a coffee roastery",
              "a hardware store", "a florist", "a pottery studio", "a small brewery",
              "a secondhand furniture shop", "a vegetarian cafe"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def person(r: Rng) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def fill(r: Rng, template: str) -> str:
    """Replace each {slot} with a fresh random value (slots repeat independently)."""
    slots = {
        "person": lambda: person(r),
        "first": lambda: r.choice(FIRST),
        "place": lambda: r.choice(PLACES),
        "street": lambda: r.choice(STREETS),
        "team": lambda: r.choice(TEAMS),
        "business": lambda: r.choice(BUSINESSES),
        "month": lambda: r.choice(MONTHS),
        "day": lambda: r.choice(DAYS),
        "n": lambda: str(r.between(3, 40)),
        "nth": lambda: ordinal(r.between(2, 20)),
        "big": lambda: f"{r.between(12, 950):,}",
        "money": lambda: f"{r.between(2, 90) * 5_000:,}",
        "pct": lambda: str(r.between(2, 35)),
        "hour": lambda: str(r.between(6, 11)),
        "score": lambda: f"{r.between(0, 4)}-{r.between(0, 4)}",
        "temp": lambda: str(r.between(-4, 33)),
        "hot": lambda: str(r.between(29, 36)),
        "year": lambda: str(r.between(1890, 1990)),
    }
    out = template
    for key, make in slots.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", make(), 1)
    return out


NEWS = {
    "council": {
        "titles": ["Council approves new budget for road repairs",
                   "Library opening hours to be extended",
                   "Plans for {street} go out to consultation",
                   "Councillors debate parking charges on {street}",
                   "New cycle lanes planned between {place} and {place}"],
        "body": [
            "The town council voted {n} to {n} on {day} evening to approve a budget of {money} pounds for the coming year.",
            "Councillor {person} said the money would be spent on repairing the worst roads first, starting with {street}.",
            "Residents who attended the meeting raised concerns about traffic near {place} during school hours.",
            "A public consultation will run until the end of {month}, and comments can be left at the town hall.",
            "The proposal was first put forward by a group of residents who collected {big} signatures last year.",
            "Opposition members argued that the plan did not go far enough and asked for a second review.",
            "Officers estimate that the work will take {n} weeks and will be carried out in stages to limit disruption.",
            "According to the council's own survey, {pct} per cent of households use {place} at least once a week.",
            "{person}, who chairs the planning committee, promised that every objection would be read in full.",
            "The library will now stay open until eight o'clock on weekdays, a change requested by students and shift workers.",
            "A similar scheme in a neighbouring town reduced accidents by {pct} per cent in its first year.",
            "The decision will be reviewed in {month} once the first figures are available.",
            "Shop owners on {street} have welcomed the plan, although some fear losing passing trade while the work goes on.",
            "The council will hold an open evening at {place} where residents can look at the drawings and ask questions.",
        ],
    },
    "weather": {
        "titles": ["Storm brings down trees across the valley",
                   "Heatwave: temperatures reach {hot} degrees",
                   "Flood warning issued for the river",
                   "First frost of the season arrives early",
                   "Clean-up continues after {day}'s heavy rain"],
        "body": [
            "Strong winds on {day} night brought down trees on {street} and left {big} homes without power for several hours.",
            "The river rose by more than a metre in a single afternoon, and the footpath near {place} was closed as a precaution.",
            "Forecasters expect temperatures of around {temp} degrees for the rest of the week, with showers moving in from the west.",
            "Volunteers spent the weekend clearing branches and sandbagging doorways along {street}.",
            "{person}, who has lived beside the river for {n} years, said they had never seen the water so high in {month}.",
            "Engineers from the power company worked through the night and restored electricity to most streets by morning.",
            "The council has opened a rest centre at {place} for anyone who cannot stay in their home.",
            "Farmers say the wet spring has delayed planting by at least {n} days.",
            "Drivers are advised to avoid the valley road until the water has gone down and the surface has been checked.",
            "Records kept at the weather station since {year} show only a handful of storms of this strength.",
            "The dry spell has left lawns brown and reservoirs at {pct} per cent below their usual level for the time of year.",
            "Residents are asked to check on elderly neighbours and to keep pets indoors during the hottest part of the day.",
        ],
    },
    "sport": {
        "titles": ["{team} win local derby",
                   "Late goal earns {team} a draw",
                   "{team} appoint new manager",
                   "Youth team reaches county final",
                   "Record crowd watches {team} at home"],
        "body": [
            "{team} beat {team} {score} on {day} in front of a crowd of {big} at the ground on {street}.",
            "The home side started brightly and took the lead after {n} minutes through a header from {person}.",
            "Their opponents were reduced to ten men shortly after half time when {person} received a second yellow card.",
            "Manager {person} praised the spirit of the squad and said the team had worked hard in training all week.",
            "The result leaves the club in {nth} place in the table with eight games of the season remaining.",
            "A late equaliser from the visitors silenced the crowd, but the home side held on for a point.",
            "The youth team, coached by {person}, have not lost a match since {month}.",
            "Tickets for the next home game go on sale on {day} and are expected to sell out quickly.",
            "Supporters travelled in {n} coaches to the away match and sang for the full ninety minutes.",
            "The club's new pitch, laid over the summer at a cost of {money} pounds, drained well despite the rain.",
            "Goalkeeper {person} made three fine saves in the second half to keep the score level.",
            "After the match, the captain thanked the volunteers who run the kiosk and the car park every week.",
        ],
    },
    "business": {
        "titles": ["{business} opens on {street}",
                   "Family firm celebrates {n} years in the town",
                   "Factory to create {big} new jobs",
                   "Market traders report a busy summer",
                   "Shop owners call for lower rents"],
        "body": [
            "{business} opened its doors on {street} on {day}, and a queue had formed before eight o'clock.",
            "Owner {person} said she had dreamed of running her own shop since she was a teenager.",
            "The building stood empty for {n} months before the new tenants signed the lease in {month}.",
            "The company expects to employ {n} people in its first year, most of them from the town itself.",
            "Traders at the weekly market say takings were up by {pct} per cent compared with last summer.",
            "{person}, whose grandfather founded the firm in {year}, still works behind the counter three days a week.",
            "Local suppliers will provide most of the flour, milk and vegetables, which the owners say keeps prices fair.",
            "The business received a grant of {money} pounds from the regional development fund.",
            "Several shop owners on {street} have written to the council asking for a review of business rates.",
            "Customers have praised the friendly service and the long opening hours on Saturdays.",
            "The new factory will make parts for wind turbines and is due to start production in {month}.",
            "A spokesperson for the chamber of commerce said the opening was a sign of confidence in the high street.",
        ],
    },
    "events": {
        "titles": ["Summer festival returns to {place}",
                   "Choir raises {money} pounds for charity",
                   "Open gardens weekend draws visitors",
                   "Historic mill opens its doors to the public",
                   "Night market lights up {place}"],
        "body": [
            "The festival returns to {place} on the first weekend of {month}, with music, food stalls and a funfair.",
            "Organiser {person} said more than {n} local bands had asked to play this year.",
            "The town choir sang to a full hall on {day} evening and raised money for the hospice.",
            "Visitors can tour the old mill, built in {year}, and watch the waterwheel turn for the first time in decades.",
            "{n} gardens will be open to the public, from small courtyards to an orchard with more than {n} apple trees.",
            "Entry is free, although donations to the restoration fund will be welcome.",
            "Volunteers have spent the winter repairing the stage and painting the railings along {street}.",
            "Parking will be limited, so visitors are encouraged to walk, cycle or take the bus from {place}.",
            "Last year's event attracted {big} visitors and raised money for three local charities.",
            "Children's activities include a treasure hunt, face painting and a puppet show at {hour} o'clock.",
            "The night market will run every {day} until the end of {month}, with stalls selling street food and crafts.",
            "{person}, a member of the history society, will give talks about the building every hour.",
        ],
    },
}

CLOSERS = [
    "Further updates will be published as the story develops.",
    "Readers with information are asked to contact the newsroom.",
    "The full report is available at the town hall and online.",
    "More details are expected later this week.",
    "",
]

DISHES = ["soup", "stew", "bake", "salad", "pie", "risotto", "curry", "tart", "loaf", "crumble"]
MAINS = ["lentil", "pumpkin", "mushroom", "chicken", "leek and potato", "tomato", "spinach",
         "apple", "rhubarb", "chickpea", "courgette", "bean", "barley", "onion"]
ADJECTIVES = ["Easy", "Weeknight", "Hearty", "Simple", "Grandma's", "Quick", "Rustic", "Spiced",
              "Summer", "Winter"]
INGREDIENTS = ["onions", "cloves of garlic", "carrots", "sticks of celery", "potatoes",
               "tins of chopped tomatoes", "cups of vegetable stock", "tablespoons of olive oil",
               "teaspoons of cumin", "teaspoons of paprika", "cups of flour", "eggs",
               "tablespoons of butter", "cups of milk", "handfuls of spinach", "lemons",
               "cups of rice", "tablespoons of honey", "teaspoons of salt", "apples",
               "cups of oats", "tablespoons of sugar", "bay leaves", "sprigs of thyme"]
STEPS = [
    "Heat the oil in a large pan over a medium heat and add the onions.",
    "Cook gently for {n} minutes, stirring now and then, until the onions are soft but not brown.",
    "Add the garlic and spices and stir for another minute until fragrant.",
    "Pour in the stock, bring to the boil and then turn down the heat.",
    "Simmer with the lid on for {n} minutes, or until everything is tender.",
    "Season to taste with salt and pepper, then stir in the lemon juice.",
    "Preheat the oven to 180 degrees and grease a deep baking dish.",
    "Rub the butter into the flour with your fingertips until the mixture looks like breadcrumbs.",
    "Spread the filling evenly in the dish and scatter the topping over it.",
    "Bake for {n} minutes until golden on top and bubbling at the edges.",
    "Leave to rest for five minutes before serving with crusty bread.",
    "Blend half of the soup until smooth, then stir it back into the pan for a thicker texture.",
    "Whisk the eggs and milk together in a jug and pour over the vegetables.",
    "Wash the rice in cold water until the water runs clear, then drain it well.",
]
RECIPE_INTROS = [
    "This is the dish I make when the evenings draw in and nobody wants to cook for long.",
    "My grandmother made this every {day}, and the smell of it still reminds me of her kitchen.",
    "A cheap, filling recipe that uses whatever vegetables are left at the end of the week.",
    "It freezes well, so I always make a double batch and keep half for a busy day.",
    "The secret is to cook the onions slowly: it takes patience, but the flavour is worth it.",
    "Serves four, or two very hungry people after a long walk.",
    "I first tasted this at a market stall on {street} and spent a month working out the recipe.",
    "Children love it, and it is a good way to get a few more vegetables into them.",
]

FORUM_TOPICS = {
    "gardening": {
        "q": ["My tomato plants have yellow leaves at the bottom. Is this a disease or am I watering too much?",
              "When is the right time to prune apple trees? Mine have not been touched for {n} years.",
              "Slugs have eaten every lettuce I planted this spring. What actually works against them?",
              "Is it too late to plant garlic in {month}? The packet says autumn but I missed it.",
              "Which fruit bushes do well in a shady corner? Ours only gets sun in the morning.",
              "How do I stop the cat digging up the seed trays on the windowsill?",
              "Our lawn is full of moss after the winter. Should I rake it out now or wait?",
              "Can I grow potatoes in bags on a balcony, and how many per bag?"],
        "a": ["Yellow leaves at the bottom are usually normal as the plant grows, but check that the soil is not waterlogged.",
              "Prune in late winter while the tree is dormant, and never take off more than a quarter of the branches in one year.",
              "Beer traps work for me, and so does going out with a torch after dark to pick them off by hand.",
              "You can still plant it, the bulbs will just be a bit smaller. Put them about ten centimetres apart.",
              "I had the same problem last year. Mulching with straw helped keep the soil moist without drowning the roots.",
              "Ask at the garden centre on {street}, the staff there gave me really good advice about my own trees.",
              "Redcurrants and gooseberries cope well with shade, and so do most mints.",
              "A few sticks pushed into the compost between the seedlings stopped our cat within a week.",
              "Rake the moss out in spring, then feed the lawn and sow a little seed into the bare patches.",
              "Three seed potatoes per large bag is plenty. Keep adding compost as the shoots grow."],
    },
    "bikes": {
        "q": ["My gears slip when I pedal hard uphill. Do I need a new chain or just an adjustment?",
              "What pressure should I run in my tyres for commuting on rough roads?",
              "Looking for a safe cycling route from {place} to the station. Any suggestions?",
              "How often should I clean and oil the chain? I ride about {n} kilometres a week.",
              "My brakes squeal in the wet. Are the pads worn or is this normal?",
              "Is a second-hand bike from the market a good idea for a first commuter?",
              "What lights do I actually need to ride home in the dark legally?",
              "How do I fix a puncture at the roadside without a workshop?"],
        "a": ["Measure the chain first. If it has stretched, replace it before it wears out the cassette as well.",
              "Try a little lower than the maximum on the sidewall, it makes rough roads much more comfortable.",
              "Go along the river path and cross at North Bridge, it avoids the busy roundabout completely.",
              "Every couple of weeks is plenty. Wipe it down, oil each link and then wipe off the excess.",
              "The repair shop on {street} will check the gears for free if you bought the bike there.",
              "A quarter turn on the barrel adjuster fixed exactly this on my bike.",
              "Some squeal in the rain is normal, but check the pads for grooves and the rims for grit.",
              "Buying second-hand is fine if you check the frame for cracks and the wheels for wobble.",
              "You need a white light at the front, a red one at the back and reflectors on the pedals.",
              "Carry tyre levers, a spare tube and a small pump. Swapping the tube is quicker than patching."],
    },
    "computers": {
        "q": ["My laptop fan is always loud, even when I am only reading email. Should I be worried?",
              "What is the best way to back up family photos so they are not lost if the computer dies?",
              "The wifi in our house drops out every evening around {hour} o'clock. Any ideas?",
              "Is it worth upgrading an old desktop with more memory, or should I buy a new one?",
              "How can I tell whether an email from the bank is genuine?",
              "The printer says it is offline although it is switched on. What should I check?",
              "Is there a simple way to share one calendar with the whole family?",
              "My phone storage is full of photos. How do I move them without losing any?"],
        "a": ["Dust is the usual cause. Blowing out the vents carefully made mine quiet again.",
              "Keep three copies: one on the computer, one on an external drive and one somewhere else, such as a relative's house.",
              "Evenings are when everyone nearby streams video. Changing the channel on the router helped us a lot.",
              "If the machine is less than {n} years old, more memory is a cheap and very effective upgrade.",
              "Check the task manager to see which program is using the processor, it might be an update running in the background.",
              "I would try a different power adapter before anything else. Mine behaved strangely until I replaced it.",
              "Never click the link in the message. Call the number printed on your card instead.",
              "Turn the printer and the router off and on again, in that order, and it usually reconnects.",
              "Most email services let you create a shared calendar and invite everyone to it.",
              "Copy them to a computer first, check that they open, and only then delete them from the phone."],
    },
}
OPENERS = ["Hi all, first post here.", "Hello everyone.", "Long time reader, first time posting.",
           "Hoping someone here can help.", "Quick question for the experts.",
           "This has been bothering me since {month}.", "Morning all."]
CONTEXT = ["I live near {place}, if that matters.", "I have tried searching but found nothing useful.",
           "Any advice would be appreciated.", "My neighbour {first} suggested asking here.",
           "I am a complete beginner, so please keep it simple.", "I have about {n} pounds to spend on it."]
REPLY_OPENERS = ["Good question.", "Same thing happened to me.", "In my experience,", "Welcome to the forum!",
                 "I would not worry too much.", "Two things to try.", "Not an expert, but"]
SIGNATURES = ["Sent from my phone", "Thanks in advance!", "Cheers", "Hope this helps.", ""]

REFERENCE_TOPICS = [
    ("How bread rises",
     ["Bread rises because yeast, a living fungus, feeds on the sugars in flour and releases carbon dioxide.",
      "The gas is trapped by gluten, a stretchy network of proteins that forms when flour is mixed with water and kneaded.",
      "Kneading lines up the gluten strands so that the dough can stretch like a balloon without tearing.",
      "Warmth speeds the yeast up and cold slows it down, which is why bakers often leave dough to rise slowly overnight.",
      "In the oven the gas expands once more before the yeast dies and the starches set, fixing the shape of the loaf."]),
    ("Why rivers flood",
     ["A river floods when more water reaches it than its channel can carry.",
      "Long spells of rain saturate the ground, so that further rain runs off the surface instead of soaking in.",
      "Towns make the problem worse, because roofs and roads send water to the river far faster than fields do.",
      "Wetlands and woodland upstream slow the water down and can lower the peak of a flood by a surprising amount.",
      "Engineers therefore combine walls and embankments in towns with natural measures further up the valley."]),
    ("How a bicycle stays upright",
     ["A moving bicycle is easy to balance, while a stationary one falls over almost at once.",
      "The rider steers the front wheel slightly towards the side the bicycle is leaning, bringing the wheels back underneath.",
      "The geometry of the front fork also helps, because the wheel turns into a lean on its own.",
      "Gyroscopic effects of the spinning wheels play a smaller part than many people assume.",
      "Experiments with specially built bicycles have shown that several effects work together, and none is essential on its own."]),
    ("Keeping records",
     ["Good records answer three questions: what happened, when it happened and who was involved.",
      "A short note written on the day is worth more than a long account written from memory weeks later.",
      "Dates should be written in one consistent format, so that entries can be sorted and compared.",
      "Important documents deserve more than one copy, stored in different places.",
      "Archivists recommend plain, widely used file formats, because unusual ones may not be readable in twenty years."]),
    ("How libraries organise books",
     ["Most public libraries arrange non-fiction by subject, using a classification scheme such as the Dewey Decimal system.",
      "Each subject receives a number, and books on related subjects receive nearby numbers, so they sit close together on the shelf.",
      "Fiction, by contrast, is usually shelved alphabetically by the author's surname.",
      "A catalogue records where every item belongs, which lets readers search by title, author or subject.",
      "Librarians regularly review the collection, replacing worn copies and removing books that are out of date."]),
    ("Composting at home",
     ["Compost is made when microbes break down plant material into a dark, crumbly soil improver.",
      "A good heap mixes green material, such as grass cuttings and vegetable peelings, with brown material, such as cardboard and dry leaves.",
      "The microbes need air as well as moisture, so the heap should be turned every few weeks.",
      "Cooked food, meat and dairy products are best left out, because they attract pests and smell as they rot.",
      "Depending on the weather, finished compost can be ready in six months to a year."]),
    ("How elections are counted",
     ["When polls close, the sealed ballot boxes are taken to a counting centre under supervision.",
      "Staff first check that the number of papers in each box matches the number issued at the polling station.",
      "The papers are then mixed together, so that nobody can tell how a particular street or village voted.",
      "Counting agents from each candidate watch the process and may ask for a recount if the result is close.",
      "Doubtful papers are shown to the candidates before the returning officer decides whether they count."]),
    ("Why the sea is salty",
     ["Rain is slightly acidic, and as it falls on rocks it slowly dissolves minerals from them.",
      "Rivers carry these dissolved minerals to the sea, where they remain when the water evaporates.",
      "Over millions of years the salt has built up to about thirty-five grams in every litre of seawater.",
      "Vents on the sea floor add further minerals from the rocks beneath the ocean.",
      "Salt also leaves the sea, trapped in sediments, so the saltiness has stayed roughly stable for a very long time."]),
]
REFERENCE_LINKS = [
    "The same principle explains several everyday observations.",
    "This is easy to check with a simple experiment at home.",
    "Historians have traced the practice back several centuries.",
    "The details vary from place to place, but the idea is the same everywhere.",
    "Understanding this makes the rest of the process much easier to follow.",
]

SPAM = [
    "WIN BIG at the online casino tonight!", "Free spins and a jackpot bonus for every new player.",
    "Payday loans approved in {n} minutes, no credit check.", "Cheap viagra shipped overnight in plain packaging.",
    "Claim your casino bonus before midnight.", "{big} players hit the jackpot this week, you could be next.",
    "Need cash fast? Payday payday payday.", "Casino, jackpot, free spins, instant payout.",
    "Hot singles in Millbrook are waiting for you.", "Replica watches and designer bags at factory prices.",
    "Act now: this jackpot offer expires in {n} hours.", "No deposit needed, withdraw your winnings any time.",
    "Our partner casino pays out {pct} per cent more than the rest.", "Click here, click here, click here.",
]
STUBS = ["404 Not Found. The page you requested could not be found.",
         "Access denied. Please log in to continue.",
         "This page has moved. You will be redirected in {n} seconds.",
         "Under construction. Please check back soon!",
         "Error 503: service temporarily unavailable. Please try again in {n} minutes.",
         "Your session has expired. Log in again to view {n} saved articles.",
         "Page {n} of {big}. Next page",
         "Comments are closed for this article."]
JUNK_WORDS = ["cheap", "best", "flights", "deals", "hotel", "discount", "buy", "online", "cheapest",
              "top", "offers", "booking", "price", "compare", "sale", "2024", "free", "shipping",
              "coupon", "code", "voucher", "review", "rated", "guaranteed", "lowest", "shop", "now",
              "outlet", "clearance", "bargain", "promo", "near", "me", "open", "today", "cheap"]


# -- pages ------------------------------------------------------------------------------------

SITES = {
    "gazette": {
        "host": "www.millbrook-gazette.example",
        "header": ["Millbrook Gazette | News | Sport | Weather | What's On | Contact",
                   "Subscribe | Log in"],
        "footer": ["Sign up for the Gazette newsletter and get the day's stories every morning.",
                   "Share this article: Facebook | Email | Print",
                   "(c) 2024 Millbrook Gazette Ltd. All rights reserved.",
                   "We use cookies to improve your experience. Read our cookie policy."],
    },
    "kitchen": {
        "host": "millbrookkitchen.example",
        "header": ["The Millbrook Kitchen | Recipes | Baking | Quick Dinners | About"],
        "footer": ["Did you make this recipe? Leave a comment below and tell us how it went!",
                   "(c) 2024 The Millbrook Kitchen. Recipes may not be reproduced without permission.",
                   "Jump to recipe | Print recipe | Pin it"],
    },
    "forum": {
        "host": "forum.millbrook.example",
        "header": ["Millbrook Community Forum > Board index", "Quick links | FAQ | Register | Login"],
        "footer": ["You must be logged in to reply to this topic.",
                   "Powered by phpBB Forum Software (c) phpBB Limited"],
    },
}


def wrap(site: str, body: str) -> str:
    s = SITES[site]
    return "\n".join(s["header"]) + "\n\n" + body.strip() + "\n\n" + "\n".join(s["footer"]) + "\n"


def slug(title: str) -> str:
    return "-".join("".join(c for c in w.lower() if c.isalnum()) for w in title.split()).strip("-")


def news_body(r: Rng, topic: str) -> tuple[str, str]:
    spec = NEWS[topic]
    title = fill(r, r.choice(spec["titles"]))
    sentences = [fill(r, s) for s in r.sample(spec["body"], r.between(9, 12))]
    paragraphs, i = [], 0
    while i < len(sentences):
        k = r.between(2, 3)
        paragraphs.append(" ".join(sentences[i:i + k]))
        i += k
    closer = r.choice(CLOSERS)
    byline = f"By {person(r)}, {r.choice(DAYS)} {r.between(1, 28)} {r.choice(MONTHS)} 2023"
    text = title + "\n" + byline + "\n\n" + "\n\n".join(paragraphs) + ("\n\n" + closer if closer else "")
    return title, text


def recipe_body(r: Rng) -> tuple[str, str]:
    title = f"{r.choice(ADJECTIVES)} {r.choice(MAINS)} {r.choice(DISHES)}"
    intro = " ".join(fill(r, s) for s in r.sample(RECIPE_INTROS, 3))
    ingredients = [f"{r.between(1, 6)} {ing}" for ing in r.sample(INGREDIENTS, r.between(5, 8))]
    steps = [fill(r, s) for s in r.sample(STEPS, r.between(5, 7))]
    half = len(steps) // 2
    text = (title + "\n\n" + intro + "\n\nYou will need " + ", ".join(ingredients[:-1])
            + " and " + ingredients[-1] + ".\n\n" + " ".join(steps[:half]) + "\n\n"
            + " ".join(steps[half:]) + f" Ready in about {r.between(2, 9) * 10} minutes.")
    return title, text


def user(r: Rng) -> str:
    return f"{r.choice(FIRST).lower()}{r.between(10, 99)}"


def forum_body(r: Rng, topic: str) -> tuple[str, str]:
    spec = FORUM_TOPICS[topic]
    question = fill(r, r.choice(spec["q"]))
    title = question.split(".")[0].split("?")[0][:70]
    opening = f"{fill(r, r.choice(OPENERS))} {question} {fill(r, r.choice(CONTEXT))}"
    posts = [f"{user(r)} wrote:\n{opening}\n{r.choice(SIGNATURES)}".rstrip()]
    for _ in range(r.between(2, 4)):
        opener = r.choice(REPLY_OPENERS)
        reply = " ".join(fill(r, a) for a in r.sample(spec["a"], r.between(1, 2)))
        if not opener.endswith((".", "!")):  # the opener runs on into the reply
            reply = reply[0].lower() + reply[1:]
        posts.append(f"{user(r)} wrote:\n{opener} {reply}\n{r.choice(SIGNATURES)}".rstrip())
    return title, f"Topic: {title}\n\n" + "\n\n".join(posts)


def reference_doc(r: Rng, title: str, sentences: list[str]) -> str:
    body = list(sentences)
    body.insert(r.between(1, len(body) - 1), r.choice(REFERENCE_LINKS))
    half = r.between(2, 3)
    return title + "\n\n" + " ".join(body[:half]) + "\n\n" + " ".join(body[half:])


def stamp(month: int, r: Rng) -> str:
    return f"2024-{month:02d}-{r.between(1, 28):02d}T{r.between(0, 23):02d}:{r.between(0, 59):02d}:00Z"


def record(doc_id: str, url: str, text: str, fetched_at: str) -> dict:
    """One line of a crawler's dump: our field names are mapped in the spec's `source`."""
    return {"id": doc_id, "content": text, "meta": {"url": url, "lang": "en"},
            "fetched_at": fetched_at}


def build_crawl(r: Rng) -> dict[int, list[dict]]:
    """Three monthly snapshots (1, 2, 3); each month's list in crawl order."""
    snapshots: dict[int, list[dict]] = {1: [], 2: [], 3: []}
    originals: list[tuple[int, dict, str]] = []  # (month, record, body) of news pages
    topics = sorted(NEWS)
    n = 0
    for month in (1, 2, 3):
        for i in range(NEWS_PER_MONTH):
            topic = topics[(i + month) % len(topics)]
            title, body = news_body(r, topic)
            n += 1
            url = f"https://{SITES['gazette']['host']}/{topic}/2024/{n:04d}-{slug(title)[:40]}"
            rec = record(f"gazette-{n:04d}", url, wrap("gazette", body), stamp(month, r))
            snapshots[month].append(rec)
            originals.append((month, rec, body))
        for _ in range(RECIPES_PER_MONTH):
            title, body = recipe_body(r)
            n += 1
            url = f"https://{SITES['kitchen']['host']}/recipes/{slug(title)}-{n}/"
            snapshots[month].append(record(f"kitchen-{n:04d}", url, wrap("kitchen", body), stamp(month, r)))
        for i in range(THREADS_PER_MONTH):
            topic = sorted(FORUM_TOPICS)[(i + month) % len(FORUM_TOPICS)]
            title, body = forum_body(r, topic)
            n += 1
            url = f"https://{SITES['forum']['host']}/viewtopic.php?t={1000 + n}&f={i % 5 + 1}"
            snapshots[month].append(record(f"forum-{n:04d}", url, wrap("forum", body), stamp(month, r)))

    # planted duplicates, each of a different original --------------------------------------
    early = [o for o in originals if o[0] < 3]  # a copy comes after its original in the crawl
    r.shuffle(early)
    recrawled, copied, mobile = early[:12], early[12:22], early[22:36]
    # (dedup url) pages fetched again in March under the same URL, spelled differently:
    # upper-case host, a fragment, the default port. The newer text has a correction
    # appended; the newest fetch is the one that survives.
    for k, (_, rec, body) in enumerate(recrawled):
        url = rec["meta"]["url"]
        variant = [url.replace("https://www.", "https://WWW."), url + "#comments",
                   url.replace(".example/", ".example:443/")][k % 3]
        text = wrap("gazette", body + "\n\nCorrection: an earlier version of this article gave the wrong date.")
        snapshots[3].append(record(f"{rec['id']}-recrawl-{k}", variant, text, stamp(3, r)))
    # (dedup exact) the same page under another URL (a print view, a tracking parameter),
    # differing only in case and spacing
    for k, (month, rec, _) in enumerate(copied):
        text = rec["content"]
        text = text.upper() if k % 2 else "  " + text.replace(". ", ".   ").replace("\n\n", "\n \n")
        url = rec["meta"]["url"] + ("?print=1" if k % 2 else "?utm_source=newsletter")
        snapshots[month + 1].append(record(f"{rec['id']}-copy-{k}", url, text, stamp(month + 1, r)))
    # (dedup minhash) the mobile site's copy of an article: another byline, a "listen" line,
    # otherwise the same page
    for k, (month, rec, body) in enumerate(mobile):
        lines = body.split("\n")
        lines[1] = f"By Gazette reporters | {r.between(2, 9)} min read | Listen to this article"
        url = rec["meta"]["url"].replace("https://www.", "https://m.")
        snapshots[month + 1].append(
            record(f"{rec['id']}-mobile-{k}", url, wrap("gazette", "\n".join(lines)), stamp(month + 1, r)))

    # planted junk ----------------------------------------------------------------------------
    for k in range(6):  # (filter dirty_words) spam
        text = " ".join(fill(r, s) for s in r.sample(SPAM, r.between(8, 11)))
        snapshots[1 + k % 3].append(record(f"spam-{k}", f"http://win-big-{k}.example/promo?id={k}", text, stamp(1 + k % 3, r)))
    for k, stub in enumerate(STUBS):  # (filter length) stubs and error pages
        snapshots[1 + k % 3].append(record(f"stub-{k}", f"https://{SITES['gazette']['host']}/page/{k}",
                                           fill(r, stub), stamp(1 + k % 3, r)))
    for k in range(JUNK):  # (quality) keyword stuffing that reads like nothing in the reference set
        words = [r.choice(JUNK_WORDS) for _ in range(r.between(70, 120))]
        for i in range(0, len(words), r.between(6, 12)):
            words[i] += " Millbrook"
        snapshots[1 + k % 3].append(record(f"seo-{k}", f"https://deals-{k}.example/millbrook", " ".join(words), stamp(1 + k % 3, r)))

    for month in snapshots:  # a crawl's order is not a site's order
        r.shuffle(snapshots[month])
    return snapshots


def build_reference(r: Rng) -> list[dict]:
    """What good text looks like, for the quality classifier: edited explanatory prose, and
    a few clean news and recipe texts (no navigation, no footers)."""
    docs = [{"text": reference_doc(r, title, sentences)} for title, sentences in REFERENCE_TOPICS]
    docs += [{"text": news_body(r, topic)[1]} for topic in sorted(NEWS) for _ in range(REF_NEWS)]
    docs += [{"text": recipe_body(r)[1]} for _ in range(REF_RECIPES)]
    docs += [{"text": forum_body(r, topic)[1]} for topic in sorted(FORUM_TOPICS) for _ in range(REF_THREADS)]
    return docs


DAYS_IN = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
SEASON = ["winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
          "autumn", "autumn", "autumn", "winter"]
SEASON_QUESTIONS = ["Which season is {m} in?", "What season is it in {m}?",
                    "In the northern hemisphere, {m} falls in which season?",
                    "Is {m} in spring, summer, autumn or winter?", "{m}: which season?",
                    "Tell me the season for the month of {m}."]
DAYS_QUESTIONS = ["How many days are there in {m}?", "How many days does {m} have?",
                  "Number of days in {m}?", "{m} has how many days?",
                  "How long is {m}, in days?", "Count the days in {m} (not a leap year)."]
NEXT_QUESTIONS = ["Which month comes after {m}?", "What month follows {m}?",
                  "After {m}, which month is next?", "Name the month after {m}."]
SYSTEMS = ["You are a helpful assistant. Answer in one word.", "Be brief.", ""]


def build_chat(r: Rng) -> list[dict]:
    """Conversations in the `messages` format: short questions about the calendar."""
    rows = []
    for i, month in enumerate(MONTHS):
        for template in SEASON_QUESTIONS:
            rows.append((template.format(m=month), SEASON[i]))
        for template in DAYS_QUESTIONS:
            rows.append((template.format(m=month), str(DAYS_IN[i])))
        for template in NEXT_QUESTIONS:
            rows.append((template.format(m=month), MONTHS[(i + 1) % 12]))
    r.shuffle(rows)
    out = []
    for question, answer in rows:
        system = r.choice(SYSTEMS)
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append({"messages": messages})
    return out


WORDS = """\
# Words that must not appear in training data (here: spam vocabulary standing in for a
# real blocklist). One word per line, compared case-insensitively with the document's words;
# `filter dirty_words` drops a document when more than `max_fraction` of its words are listed.
casino
jackpot
payday
viagra
"""


# -- writing ---------------------------------------------------------------------------------

def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode()


def gzipped(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buf.getvalue()


def files() -> dict[str, bytes]:
    """Every file this script writes (relative path -> content), uncompressed."""
    r = Rng(SEED)
    crawl = build_crawl(r)
    out = {f"corpus/crawl-2024-{month:02d}.jsonl.gz": jsonl(rows) for month, rows in crawl.items()}
    out["reference/good.jsonl"] = jsonl(build_reference(r))
    out["chat.jsonl"] = jsonl(build_chat(r))
    out["words.txt"] = WORDS.encode()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the own_data example's files.")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: beside this script)")
    root = parser.parse_args(argv).out
    for rel, data in files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzipped(data) if rel.endswith(".gz") else data)
        print(f"{rel}: {len(data):,} bytes" + (" before gzip" if rel.endswith(".gz") else ""))


if __name__ == "__main__":
    main()
