"""Calibration sentences for the built-in MiniLM: the project's own, none of them in `lowbit.models.SENTENCES`
(the sentences accuracy is measured on). Varied topics, lengths and styles, written for this purpose."""

CALIBRATION_SENTENCES = (
    # everyday life
    "I left my umbrella on the bus this morning.",
    "The bakery on the corner opens at six.",
    "We painted the kitchen a pale shade of green.",
    "My neighbour's dog barks whenever the postman arrives.",
    "Could you pick up some milk on your way home?",
    "The laundry has been sitting in the machine all day.",
    "She forgot her keys and had to wait outside for an hour.",
    "Our train was delayed by twenty minutes because of signal problems.",
    "He always drinks two cups of coffee before work.",
    "The children built a fort out of sofa cushions.",
    "Please remember to water the plants while I'm away.",
    "The supermarket was crowded on Saturday afternoon.",
    "I need to renew my passport before the summer holidays.",
    "They moved into a small flat near the river.",
    "The washing machine makes a strange noise during the spin cycle.",
    "Grandma knitted a scarf for each of her grandchildren.",
    "The power went out during the storm last night.",
    "We usually have pasta on Wednesdays.",
    "Someone left a note on my car windscreen.",
    "The library extended its opening hours for exam season.",
    "My phone battery dies by the middle of the afternoon.",
    "The parking lot behind the cinema is free after eight.",
    "He fixed the leaking tap with a new washer.",
    "We argued about whose turn it was to do the dishes.",
    # food and cooking
    "Slice the onions thinly and fry them until golden.",
    "This soup needs a little more salt and a squeeze of lemon.",
    "The restaurant serves the best dumplings in town.",
    "Let the dough rise in a warm place for two hours.",
    "She prefers her steak cooked medium rare.",
    "Fresh basil makes a big difference in tomato sauce.",
    "The cheese platter came with grapes, walnuts and honey.",
    "He burned the rice while answering the phone.",
    "Whisk the eggs with sugar until the mixture turns pale.",
    "The café ran out of croissants before nine.",
    "A pinch of cinnamon improves almost any apple dessert.",
    "Roast the vegetables at two hundred degrees for forty minutes.",
    "They ordered too much food and took the leftovers home.",
    "The curry was far spicier than the menu suggested.",
    "Store the berries in the fridge and wash them just before eating.",
    "Our chef trained in Lyon before opening this bistro.",
    # work and business
    "The quarterly report is due on Friday.",
    "Our team missed the deadline because of a supplier issue.",
    "The company plans to hire fifty engineers next year.",
    "Please send me the slides before the meeting starts.",
    "Revenue grew by eight percent compared with last year.",
    "The merger was approved by regulators in both countries.",
    "She negotiated a higher salary when she changed jobs.",
    "Customer complaints dropped after the new support system launched.",
    "The startup raised its first round of funding in March.",
    "Interest rates were left unchanged by the central bank.",
    "Shipping costs have doubled since the start of the year.",
    "The board appointed a new chief financial officer.",
    "Many employees now work from home three days a week.",
    "Inflation eased slightly in the latest figures.",
    "The factory will switch to renewable electricity by 2030.",
    "Sales of electric bicycles rose sharply this spring.",
    "The contract includes a penalty for late delivery.",
    "Our budget for marketing was cut in half.",
    "The airline cancelled dozens of flights due to a strike.",
    "A small bookshop survived by hosting weekly readings.",
    # science and nature
    "Photosynthesis converts sunlight into chemical energy.",
    "The volcano erupted for the first time in a century.",
    "Whales communicate over long distances with low-frequency songs.",
    "A new species of frog was discovered in the rainforest.",
    "The telescope captured images of a distant galaxy cluster.",
    "Bees play a vital role in pollinating crops.",
    "Glaciers in the Alps are shrinking faster than expected.",
    "The experiment confirmed the prediction within the margin of error.",
    "Earthquakes are measured using seismographs.",
    "Light from the sun takes about eight minutes to reach Earth.",
    "The migrating geese flew south in a long V formation.",
    "Coral reefs are threatened by warming oceans.",
    "Water boils at a lower temperature on high mountains.",
    "The comet will be visible to the naked eye next week.",
    "Researchers sequenced the genome of an ancient wheat variety.",
    "Octopuses can change colour to blend into their surroundings.",
    "The lunar eclipse turned the moon a deep red.",
    "Soil bacteria help plants absorb nitrogen.",
    "A strong magnetic field protects the planet from solar wind.",
    "The desert blooms briefly after a rare heavy rain.",
    # technology and computing
    "The update fixed a bug that drained the battery.",
    "Restart the router if the connection keeps dropping.",
    "This laptop has sixteen gigabytes of memory.",
    "The database query took several seconds to return.",
    "Encryption keeps your messages private in transit.",
    "The compiler reported a type error on line forty.",
    "We migrated the service to a new cloud provider.",
    "Unit tests caught the regression before release.",
    "The app crashes when the screen is rotated.",
    "Matrix multiplication dominates the cost of the network.",
    "A smaller model runs comfortably on a phone.",
    "The GPU finished training the model overnight.",
    "Caching the results cut the response time in half.",
    "Open source projects depend on volunteers.",
    "The password must contain at least twelve characters.",
    "Sensors on the bridge report vibration in real time.",
    "The robot vacuum got stuck under the sofa again.",
    "Version control lets the team work on the same files.",
    "The website was down for maintenance for two hours.",
    "Speech recognition has become remarkably accurate.",
    "Pruning removes weights that contribute little to the output.",
    "Rounding errors accumulate over many operations.",
    "The kernel reads four-bit weights and expands them on the fly.",
    "Calibration data helps choose better quantization scales.",
    # sport and games
    "The home team scored in the final minute.",
    "She ran her first marathon in under four hours.",
    "The chess match ended in a draw after six hours.",
    "He has played tennis every Sunday for twenty years.",
    "The cycling race passes through three mountain passes.",
    "Our local club was promoted to the second division.",
    "The goalkeeper saved a penalty in extra time.",
    "Swimming is gentle on the joints.",
    "The referee was criticised for a controversial decision.",
    "They climbed the north face of the mountain in winter.",
    "The board game night lasted until midnight.",
    "Ticket prices for the final have tripled.",
    "The young sprinter broke the national record.",
    "Rain delayed the cricket match until the afternoon.",
    "He learned to ski at the age of fifty.",
    # travel and places
    "The old town is best explored on foot.",
    "We took a night ferry across the strait.",
    "The museum holds a large collection of Roman coins.",
    "Hotels near the beach are fully booked in August.",
    "The border crossing took longer than we planned.",
    "A narrow road winds up to the monastery.",
    "The market sells spices, fabrics and handmade lamps.",
    "Our flight has a three-hour layover in Doha.",
    "The village is famous for its lavender fields.",
    "Tourists queued for hours to see the painting.",
    "The hiking trail follows the coast for ten kilometres.",
    "Trains in this country are punctual and clean.",
    "The castle overlooks a deep blue lake.",
    "She backpacked through South America after university.",
    "Bring warm clothes, the nights in the desert are cold.",
    # health
    "Regular exercise lowers the risk of heart disease.",
    "The doctor recommended more sleep and less caffeine.",
    "He sprained his ankle during the football match.",
    "Vaccines train the immune system to recognise a virus.",
    "Drinking enough water helps prevent headaches.",
    "The clinic offers free flu shots this month.",
    "Stretching before running can reduce injuries.",
    "She is recovering well after knee surgery.",
    "A balanced diet includes plenty of vegetables.",
    "The hospital opened a new children's ward.",
    # arts and culture
    "The novel follows three generations of one family.",
    "The band released their first album in a decade.",
    "The film won the award for best cinematography.",
    "An exhibition of modern sculpture opens tomorrow.",
    "She reads poetry aloud to her students every Friday.",
    "The theatre staged a new version of an old comedy.",
    "Jazz musicians often improvise around a melody.",
    "The documentary explores life in the Arctic.",
    "He paints landscapes in watercolour.",
    "The choir sang in the cathedral on Christmas Eve.",
    "Critics praised the author's sharp, funny dialogue.",
    "The festival draws thousands of visitors each summer.",
    "The orchestra rehearsed the symphony for weeks.",
    "A street artist covered the wall with a colourful mural.",
    # history and society
    "The treaty ended a war that lasted thirty years.",
    "The city walls were built in the twelfth century.",
    "Voters will elect a new parliament in the autumn.",
    "The printing press changed how knowledge spread.",
    "The council approved plans for a new bridge.",
    "Protesters gathered peacefully in the main square.",
    "The ancient road connected the port to the capital.",
    "Schools will receive additional funding for teachers.",
    "The census counts every resident once a decade.",
    "Volunteers cleaned the beach after the festival.",
    # questions and requests
    "What time does the next bus leave?",
    "Can you recommend a good book about history?",
    "Why is the sky blue during the day?",
    "Where can I buy a ticket for the concert?",
    "How long does it take to learn a new language?",
    "Is there a pharmacy open on Sundays?",
    "Which route avoids the traffic in the city centre?",
    "How do I reset my password?",
    "Would you like tea or coffee?",
    "What is the difference between weather and climate?",
    "Can I bring my dog to the restaurant?",
    "How many people live in this city?",
    "Do you know when the shop closes tonight?",
    "What should I pack for a week in the mountains?",
    "How can I make my code run faster?",
    # short and fragments
    "Thanks for your help!",
    "See you tomorrow.",
    "Absolutely not.",
    "Closed for renovation.",
    "Best wishes from all of us.",
    "Under construction.",
    "Happy birthday!",
    "Sold out.",
    "No parking at any time.",
    "Fragile, handle with care.",
    # longer sentences
    "Although the forecast promised sunshine, the afternoon turned grey and a cold wind blew in from the sea.",
    "The committee spent most of the meeting discussing the budget and postponed the decision on the new hall.",
    "After years of saving, they finally bought a small farmhouse with an orchard and a view of the valley.",
    "When the software was released, users quickly found ways to use it that the developers had never imagined.",
    "The researchers measured the temperature every hour for a month and found a clear pattern at night.",
    "If you follow the river upstream for an hour, you will reach a waterfall hidden among the pines.",
    "The teacher explained the problem three different ways until every student understood it.",
    "Despite the rain, hundreds of runners lined up at the start and cheered as the race began.",
    "Her grandfather kept a diary for sixty years, recording the weather, the harvest and village news.",
    "Because the bridge was closed for repairs, the drive to the coast took almost twice as long as usual.",
    "The new model compresses each weight to four bits and still produces almost the same embeddings.",
    "Engineers tested the prototype in freezing conditions to make sure the battery would not fail.",
    "The museum's night tour lets visitors explore the galleries by torchlight, with actors playing historical "
    "figures.",
    "Once the snow melted, the meadow filled with wildflowers, and the farmers moved their cattle up the slopes.",
    "Every Monday the team reviews the previous week's incidents and agrees on one improvement to make.",
    # opinions and feelings
    "I think the sequel was better than the original.",
    "She was thrilled to hear that she got the job.",
    "Honestly, I find airports exhausting.",
    "He felt nervous before giving his first speech.",
    "The view from the top was worth the climb.",
    "I'm not convinced this plan will work.",
    "They were disappointed by the ending of the series.",
    "It was the most peaceful holiday we have ever had.",
    "Waiting in line for an hour tested everyone's patience.",
    "We were pleasantly surprised by the quality of the food.",
    # instructions
    "Turn left at the second traffic light.",
    "Unplug the device before cleaning it.",
    "Fill in the form and sign it at the bottom.",
    "Keep the medicine out of reach of children.",
    "Press and hold the button for five seconds.",
    "Preheat the oven and grease the baking tin.",
    "Save your work before closing the program.",
    "Attach the receipt to your expense claim.",
    "Tighten the screws evenly to avoid warping the frame.",
    "Mix equal parts of vinegar and water to clean the windows.",
    # animals
    "The cat chased a moth around the living room.",
    "Horses graze in the field behind the farm.",
    "A fox crossed the road in front of our car.",
    "The parrot can repeat a dozen words.",
    "Penguins huddle together to survive the winter.",
    "The puppy chewed through the charging cable.",
    "Owls hunt silently at night.",
    "The aquarium has a tunnel under the shark tank.",
    "Squirrels bury nuts to eat in the winter.",
    "The elephant sprayed water over its back.",
    # numbers and facts
    "The recipe serves four people.",
    "The bridge is nearly two kilometres long.",
    "Prices rose by three percent last month.",
    "The meeting is scheduled for half past ten.",
    "The tower has three hundred and twelve steps.",
    "Ninety percent of the tickets were sold online.",
    "The journey takes about six hours by train.",
    "The package weighs just under five kilograms.",
    # law and government
    (
        "The council has until the end of the month to respond to the consultation, after which the secretary of state "
        "will decide whether to call in the application."
    ),
    "Parliament is in recess until September.",
    "A judge granted the injunction late on Friday evening.",
    (
        "The tenant is responsible for keeping the drains free of blockages, unless the landlord has been notified in "
        "writing of a defect."
    ),
    (
        "Under section 4(2), the licence may be revoked without notice if the holder breaches any of the conditions "
        "set out in Schedule 1."
    ),
    "Who actually gets to vote in a local council election?",
    (
        "Where a contract is silent on the question of termination, the courts will usually imply a term allowing "
        "either party to end it on reasonable notice."
    ),
    "Voter turnout was the lowest since 1974.",
    "The committee will hear evidence from three former ministers next week.",
    "Nothing in this agreement shall be construed as creating a partnership or joint venture between the parties.",
    (
        "Critics of the proposal argue that giving ministers the power to amend primary legislation by regulation "
        "bypasses proper scrutiny by elected representatives."
    ),
    "She was sworn in as the country's first female chief justice.",
    "The appeal was dismissed with costs.",
    (
        "A referendum on the new electoral system is expected in the spring, although the date has not yet been "
        "confirmed by the government."
    ),
    "Planning permission for the wind farm was refused on appeal.",
    "The senator introduced an amendment that would cap campaign donations at five thousand dollars per person.",
    (
        "Any person who wishes to object to the licence application must do so in writing, stating the grounds of the "
        "objection, no later than 28 days after publication."
    ),
    "The treaty was signed in Lisbon and came into force two years later.",
    "Local elections: polls close at 10pm.",
    "Opposition leaders walked out of the chamber in protest.",
    (
        "The new law requires landlords to provide tenants with a valid energy performance certificate before a "
        "tenancy begins, with fines of up to £5,000 for non-compliance."
    ),
    (
        "If you receive a jury summons, you must reply within seven days, even if you believe you are not eligible to "
        "serve."
    ),
    "The new regulations take effect on 1 January.",
    "The minister resigned after the leaked emails were published.",
    "A coalition government was formed after weeks of negotiations.",
    (
        "After three days of debate, the assembly voted narrowly to lower the voting age to sixteen for local and "
        "regional elections, though not for national ones."
    ),
    "Taxpayers deserve to know how their money is spent.",
    "The Supreme Court agreed to hear the case in October.",
    (
        "The inquiry concluded that the department had ignored repeated warnings from its own engineers and that "
        "senior officials had misled the public about the risks."
    ),
    "The policy was quietly dropped.",
    # finance and economics
    (
        "When interest rates rise, the cost of servicing variable-rate mortgages goes up almost immediately, while "
        "savers often have to wait months before their banks pass on better returns."
    ),
    "The central bank held interest rates steady for the third consecutive meeting.",
    "Your monthly statement is now available to view online.",
    (
        "The report estimates that the informal economy accounts for nearly a third of economic activity in the "
        "region, most of it in street trading, construction and domestic work."
    ),
    (
        "The company reported a net loss of $14 million for the quarter, blaming higher energy costs and weaker demand "
        "in Europe."
    ),
    "Compound interest rewards patience more than cleverness.",
    "Unemployment rose slightly, to 4.1 percent.",
    "A mortgage broker can compare deals from dozens of lenders.",
    "The pound strengthened against the euro after the trade figures were released.",
    (
        "If you are self-employed, you will need to file a tax return by 31 January and pay any tax owed, along with a "
        "payment on account for the following year."
    ),
    "Gross domestic product grew by 0.3 percent in the final quarter.",
    "Please keep all receipts for at least six years in case of a tax inspection.",
    "The start-up raised eighteen million in its latest funding round.",
    "Budget deficit widens as tax receipts fall short.",
    (
        "Wages have not kept pace with rising rents in most large cities, according to a report published this morning "
        "by a housing charity."
    ),
    "Interest is calculated daily and paid monthly.",
    (
        "Index funds have become popular with ordinary investors because they offer broad diversification at very low "
        "cost and do not rely on any fund manager outguessing the market."
    ),
    "The merger still needs approval from competition regulators in Brussels and Washington.",
    "Bond yields climbed to their highest level in a decade.",
    (
        "The government's spending plans assume growth of around two percent a year, which many independent "
        "forecasters regard as optimistic given the current weakness in business investment."
    ),
    "The annual percentage rate on the card is 23.9% variable.",
    "Supply chain disruption pushed up the price of building materials by almost a fifth.",
    (
        "A household budget doesn't have to be complicated: write down what comes in, what goes out, and what you "
        "would like to have left at the end of the month."
    ),
    "The dividend will be paid on 14 June to shareholders on the register at the close of business on 24 May.",
    "Economists disagree about whether the slowdown is temporary.",
    "Cash flow, not profit, is what keeps a young company alive.",
    "Oil prices rose sharply after the pipeline was damaged.",
    "The housing market cooled noticeably over the summer.",
    (
        "Rising food prices have hit lower-income families hardest, since they spend a larger share of their income on "
        "groceries, energy and other essentials than wealthier households do."
    ),
    # medicine in depth
    "Take one tablet twice daily with food.",
    (
        "The patient was started on intravenous fluids and broad-spectrum antibiotics while awaiting the results of "
        "blood cultures, and his temperature settled within forty-eight hours."
    ),
    "An MRI scan showed a small tear in the meniscus.",
    "Antibiotics are ineffective against viral infections such as the common cold.",
    "Blood pressure: 128/84 mmHg.",
    (
        "Anyone who experiences swelling of the lips, tongue or throat after taking this medication should stop "
        "immediately and seek emergency medical help."
    ),
    "The surgeon removed the appendix through three small incisions.",
    "Do not drive or operate machinery if this medicine makes you drowsy.",
    "Hand hygiene remains the single most effective way to prevent the spread of infection in hospitals.",
    (
        "Although most moles are harmless, you should see a doctor if one changes in size, shape or colour, becomes "
        "itchy, or starts to bleed without an obvious reason."
    ),
    "She was diagnosed with asthma at the age of six.",
    "Symptoms usually resolve within a fortnight without treatment.",
    (
        "Chronic kidney disease is often silent until its later stages, which is why routine blood tests matter for "
        "people at risk."
    ),
    "The ward sister checked the drug chart before the evening round.",
    "Allergies: penicillin (rash).",
    (
        "The study followed more than twelve thousand adults for a decade and found that regular moderate exercise was "
        "linked to a substantially lower risk of heart disease."
    ),
    "Physiotherapy began the day after the knee replacement.",
    (
        "Patients should fast for at least six hours before a general anaesthetic, though small sips of water are "
        "usually allowed."
    ),
    "Is it safe to take ibuprofen with paracetamol?",
    "The trial compared the new drug with a placebo in 4,200 adults.",
    (
        "Chronic pain is not simply a symptom of injury; over time the nervous system itself can become sensitised, so "
        "that ordinary signals are experienced as pain."
    ),
    "Early detection improves survival rates dramatically.",
    "The consultant recommended a biopsy to rule out anything serious.",
    "Signs of a stroke include facial drooping, arm weakness and slurred speech; call an ambulance immediately.",
    "Store below 25°C and keep out of the reach of children.",
    (
        "After the operation, you may feel tired for several weeks, and you should avoid lifting anything heavier than "
        "a full kettle until your surgeon tells you otherwise."
    ),
    "The heart pumps around five litres of blood every minute.",
    "Post-operative nausea affects roughly a third of surgical patients.",
    (
        "Doctors are increasingly cautious about prescribing antibiotics for minor infections because overuse has "
        "driven the spread of resistant bacteria around the world."
    ),
    # education
    (
        "The new curriculum puts more emphasis on practical problem-solving and less on memorising facts, although "
        "some teachers worry that the exams have not changed to match."
    ),
    "Our school is raising money for a new science lab.",
    "Homework is due before the start of Monday's lesson.",
    "Teachers say smaller class sizes make the biggest difference to how much attention each child gets.",
    (
        "Students who need extra time in examinations because of a disability or medical condition should contact the "
        "learning support team at least six weeks in advance."
    ),
    "What's the difference between a bachelor's and a master's degree?",
    "The university offers evening courses for mature students.",
    "Reading aloud to young children builds vocabulary faster than almost anything else.",
    (
        "When I was learning Spanish, nothing helped as much as spending a summer with a family in Seville who spoke "
        "no English at all and refused to slow down."
    ),
    "The dissertation must not exceed twelve thousand words, excluding the bibliography and appendices.",
    "She teaches French at a secondary school in Leeds.",
    "Parents' evening has been moved to the school hall.",
    (
        "The university has promised to review its admissions process after figures showed that applicants from state "
        "schools were less likely to receive offers than those with identical grades."
    ),
    (
        "The lecture on medieval trade routes was surprisingly entertaining, mostly because the professor kept acting "
        "out the haggling."
    ),
    "Applications close at midnight on 15 January.",
    "Kids learn best when they're allowed to make mistakes.",
    "The head teacher announced a new uniform policy.",
    "Scholarships cover tuition but not accommodation or living costs.",
    "Every pupil in year nine will spend a week on a work placement, arranged either by the school or by their family.",
    (
        "Good teachers seem to know instinctively when a class has stopped listening, and they change direction before "
        "the room drifts off completely."
    ),
    "Group projects teach you more about people than about the subject.",
    "The spelling test is on Friday.",
    "He left school at sixteen and went back to college in his forties.",
    (
        "Tuition fees have tripled in a decade, and many graduates now expect to be repaying their loans well into "
        "their fifties, if they ever repay them at all."
    ),
    "The nursery has a waiting list of over a year.",
    "She was the first person in her family to go to university.",
    "Online courses suit some learners far better than others.",
    (
        "Our primary school runs a breakfast club from 7:45 each morning so that parents who start work early can drop "
        "their children off safely."
    ),
    "Marking essays took up most of the weekend.",
    # family and relationships
    "My sister is getting married in June.",
    (
        "My grandmother raised six children in a two-bedroom terrace with an outside toilet, and she still insists "
        "those were the happiest years of her life."
    ),
    "Dad taught me how to ride a bike in the car park behind the church.",
    "Sunday lunch at my grandparents' house was always loud and chaotic.",
    (
        "We try to eat dinner together at least four nights a week, with phones in a basket by the door, even if it "
        "means eating later than we'd like."
    ),
    "Our son starts school in September, and honestly I'm more nervous than he is.",
    "They adopted twins from an orphanage abroad.",
    (
        "When our first baby arrived, friends warned us about the lack of sleep, but nobody mentioned how much we "
        "would argue about whose turn it was to get up."
    ),
    "Being a stepparent takes patience.",
    "She calls her mother every evening at seven, no matter where she is in the world.",
    "The cousins only meet at weddings and funerals.",
    "He proposed on a windy beach in Cornwall.",
    "Long-distance relationships are hard but not impossible.",
    "Happy anniversary to the most patient man I know!",
    (
        "He didn't meet his half-brother until they were both in their forties, and they were astonished to discover "
        "they had the same laugh and the same terrible handwriting."
    ),
    "Family holidays always involve at least one argument about directions.",
    (
        "After the divorce, they agreed to share custody of the children equally and to live within ten minutes of "
        "each other."
    ),
    "My nan still sends birthday cards with a five-pound note inside.",
    "We named the baby after her great-grandmother.",
    (
        "Raising teenagers mostly involves waiting in cars outside other people's houses at eleven o'clock at night "
        "and pretending not to be worried."
    ),
    "Friendship is mostly about turning up.",
    "The in-laws are staying with us for the whole of Christmas week.",
    (
        "Every summer the whole family squeezes into a rented cottage by the sea, and every summer someone swears it "
        "will be the last time."
    ),
    "Our daughter wants a pony for her birthday; she's getting a goldfish.",
    "Grief changes shape, but it never really leaves.",
    "He's a wonderful uncle and a terrible babysitter.",
    "When my parents retired, they sold the house and bought a narrowboat.",
    "Siblings remember the same childhood very differently.",
    "Couples who last are often not the ones who never argue, but the ones who know how to repair things afterwards.",
    # emotions
    "I'm so proud of you.",
    (
        "There's a specific kind of dread that comes from seeing an unread email from your manager with the subject "
        'line "Quick chat?" late on a Friday afternoon.'
    ),
    "Jealousy is a poor adviser.",
    "Honestly, I'm exhausted and I just want to sleep for a week.",
    "He hid his disappointment behind a polite smile.",
    (
        "I didn't realise how tense I had been until the results came back and my shoulders finally dropped about "
        "three inches."
    ),
    "Nervous excitement kept her awake the night before the interview.",
    "Why do I feel anxious for no reason?",
    (
        "She tried to explain that she wasn't sad exactly, just tired in a way that a good night's sleep didn't seem "
        "to fix anymore."
    ),
    "We laughed until our stomachs ached.",
    "He was quietly furious.",
    "Nostalgia hit me hard when I found my old school reports in the attic.",
    "It's okay not to be okay.",
    (
        "Joy sometimes arrives quietly, in the middle of an ordinary afternoon, when you look up and notice that "
        "everyone you love is in the same room."
    ),
    "I felt completely out of my depth during the first week of the new job.",
    "Gratitude is easier to feel than to express.",
    "The silence after the argument was worse than the shouting.",
    "He couldn't stop grinning after she said yes.",
    (
        "Embarrassment fades surprisingly fast for everyone except the person it happened to, who will remember it at "
        "three in the morning for years."
    ),
    "Sometimes happiness is just a warm drink and nowhere to be.",
    (
        "He had been so angry for so long that when the anger finally left, he felt strangely empty, as if he had lost "
        "an old companion."
    ),
    "The news left the whole village in shock.",
    "Fear of failure stopped him from even applying for the job he had wanted for years.",
    "She was overwhelmed by the kindness of strangers.",
    "Boredom can be oddly creative.",
    (
        "Waiting for news is often harder than hearing bad news, because the mind fills every silence with the worst "
        "possible outcome."
    ),
    # fashion and clothing
    "Wide-leg trousers are back in fashion this autumn.",
    "This jacket is made from 100% recycled polyester.",
    "Does this shirt go with these shoes?",
    (
        "Buying fewer, better-made clothes costs more at the till but usually works out cheaper over time, because a "
        "good wool coat can last ten years or longer."
    ),
    "Machine wash at 30 degrees, do not tumble dry.",
    (
        "The exhibition traces two centuries of menswear, from stiff Victorian collars and waistcoats to the loose "
        "suits and sportswear that dominate wardrobes today."
    ),
    "Vintage denim sells for surprising amounts online.",
    "Linen creases easily but stays cool in the heat.",
    (
        "If you're not sure what to wear to a wedding, a simple dark suit or a plain dress in a muted colour is almost "
        "always a safe choice."
    ),
    "The dress fits perfectly but the sleeves are a little long.",
    (
        "Her grandmother's sewing machine still works perfectly, and she uses it to alter charity-shop finds into "
        "clothes that look as if they were made for her."
    ),
    "Sizes run small, so order one size up.",
    "Her wedding dress belonged to her grandmother.",
    "Trainers with a suit: yes or no?",
    "The tailor took in the waist by two centimetres.",
    (
        "Denim was originally workwear for miners and farm labourers, and it took Hollywood and rock music to turn "
        "jeans into a symbol of youthful rebellion."
    ),
    "A good coat is worth every penny.",
    "Leather boots need polishing at least once a month if you want them to last more than a couple of winters.",
    "Pastel colours dominated the spring ranges.",
    "I can never find jeans that fit both my waist and my legs.",
    (
        "The brand says it will stop using virgin plastic in its packaging by 2026 and publish a full list of the "
        "factories that make its clothes."
    ),
    "Silk ties are hand-finished in a small workshop in Como.",
    (
        "Wearing the same outfit to work every day sounds boring, but plenty of busy people swear it saves them time "
        "and a surprising amount of stress."
    ),
    "Knitwear sales doubled during the cold snap.",
    # home and garden
    "The tomatoes are finally turning red.",
    (
        "If your seedlings are tall and spindly, they probably aren't getting enough light, so move them to a brighter "
        "windowsill or put them under a grow lamp."
    ),
    "Prune roses in late winter, just before new growth begins.",
    "The boiler needs servicing once a year.",
    (
        "Before you start sanding the floorboards, hammer down any protruding nails, or they will tear the sanding "
        "paper to shreds within minutes."
    ),
    "Our garden faces north, so anything that loves sun struggles, but ferns and hostas do brilliantly.",
    "Slugs ate every single lettuce overnight.",
    'The estate agent described the house as having "bags of character."',
    (
        "We spent the whole of last summer turning a neglected patch of concrete into a small courtyard garden with "
        "raised beds, a bench and a climbing jasmine."
    ),
    "She repainted the front door a deep navy blue.",
    "Compost should be turned every few weeks to keep it aerated.",
    (
        "Condensation on the inside of windows is usually a sign of poor ventilation, so open a window after showering "
        "and try not to dry clothes on the radiators."
    ),
    "Bleed the radiators if the tops stay cold.",
    "Sunflowers grew taller than the fence this summer.",
    "The hedge needs trimming before the birds start nesting.",
    "Cheap curtains make a room look unfinished.",
    (
        "A wildflower meadow needs poor soil, so don't add fertiliser; the grasses will grow too vigorously and crowd "
        "out the flowers you actually want."
    ),
    "Always switch off the power at the fuse box before changing a light fitting.",
    "The lawn is more moss than grass.",
    (
        "The house was on the market for eight months before anyone made an offer, mainly because the photographs made "
        "the rooms look much smaller than they are."
    ),
    "Bulbs planted in October will flower in spring.",
    "A dripping tap can waste thousands of litres of water a year.",
    "The greenhouse stays warm enough for chillies until November.",
    (
        "Renovating an old cottage taught us that every job takes twice as long as you expect and that there is always "
        "something nasty hiding behind the plaster."
    ),
    "Weeds grow faster than anything I actually plant.",
    "Two-bedroom cottage with south-facing garden and off-street parking.",
    "The hallway floor is original Victorian tile.",
    # cars and transport
    (
        "Drivers are being urged to avoid the area after a lorry shed its load across both carriageways, leaving the "
        "motorway closed in both directions for several hours."
    ),
    "Fill up before the motorway; the next services are 40 miles away.",
    "Electric vehicles now make up one in five new car sales.",
    "The bus lane is in operation from 7am to 7pm, Monday to Saturday.",
    (
        "If your car breaks down on a motorway, move to the left-hand lane, pull onto the hard shoulder, and wait "
        "behind the barrier while you call for help."
    ),
    "The night train from Vienna arrives in Venice just after breakfast.",
    "How long does it take to charge an electric car at home?",
    "Roadworks on the ring road are causing long delays this morning.",
    (
        "The city's bike-sharing scheme now has more than two thousand bicycles at three hundred docking stations, and "
        "most journeys are under fifteen minutes long."
    ),
    "A new cycle lane runs from the station to the university.",
    "Mind the gap between the train and the platform.",
    "He bought a second-hand hatchback with ninety thousand miles on the clock.",
    (
        "Before long drives, check the oil, coolant and screenwash, and make sure the spare tyre is properly inflated "
        "in case you get a puncture far from a garage."
    ),
    "The engine warning light came on halfway up the hill.",
    "Airport security queues were over an hour long this morning.",
    (
        "High-speed trains between the two capitals now take under three hours, which has made flying between them "
        "almost pointless for most business travellers."
    ),
    "The timetable changes on the second Sunday in December.",
    "Learner drivers must be accompanied by someone over 21 who has held a full licence for three years.",
    "Diesel prices have dropped for the third week in a row.",
    (
        "The old railway line was closed in the 1960s, but volunteers have restored a five-mile stretch, and steam "
        "trains now run every weekend from Easter to October."
    ),
    "Parking here is pay-and-display only.",
    "The self-driving taxi paused politely for a pigeon.",
    "Our flight was diverted to Manchester because of fog at Heathrow.",
    "Cargo ships carry about ninety percent of world trade.",
    "The clutch started slipping on the way back from Wales.",
    (
        "Congestion charges have reduced traffic in the city centre, although shop owners argue that fewer cars have "
        "also meant fewer customers on the high street."
    ),
    # weather and climate
    (
        "Scientists say the heatwave would have been almost impossible without human-caused climate change, and that "
        "such events are now likely to happen every few years."
    ),
    "A heatwave warning is in place for the south-east.",
    "Fog lingered in the valley until almost noon.",
    "Monsoon season brings most of the region's annual rainfall in just three months.",
    "The hurricane made landfall as a category four storm.",
    (
        "Warmer oceans hold more energy, which means that tropical storms can intensify more quickly and carry more "
        "moisture when they reach the coast."
    ),
    "What causes thunder?",
    "Drought has left the reservoir at less than a third of its capacity.",
    "Clear skies and light winds are expected for the weekend.",
    (
        "The farmers remember summers when the river never ran dry, but in the last decade it has dwindled to a "
        "trickle by August almost every year."
    ),
    "Glaciers in the Alps have lost more than half their volume since 1900.",
    "Hailstones the size of golf balls smashed car windscreens across the town.",
    "Carbon dioxide traps heat in the atmosphere by absorbing infrared radiation emitted from the Earth's surface.",
    "A hosepipe ban comes into force on Friday.",
    (
        "Meteorologists use a combination of satellite images, weather balloons and computer models to predict how a "
        "storm will move over the next few days."
    ),
    "Warm, humid air rising quickly is the basic ingredient of a thunderstorm.",
    "The wildfire season now starts weeks earlier than it did a generation ago.",
    "Frost pockets form in low-lying hollows on still, clear nights.",
    (
        "Melting permafrost releases methane, a powerful greenhouse gas, which in turn causes more warming and more "
        "melting in a feedback loop that is hard to stop."
    ),
    "El Niño tends to bring drier conditions to Australia and Indonesia.",
    "Barometric pressure dropped sharply before the gale.",
    "It was the hottest July on record.",
    "Snow fell in the desert for the first time in decades.",
    (
        "The town built a new sea wall after the floods of 2014, but residents say it won't be high enough if sea "
        "levels keep rising at the current rate."
    ),
    "The sun came out just as the picnic ended.",
    "Planting trees in cities can lower street temperatures by several degrees on hot days.",
    "A rainbow appears when sunlight is refracted and reflected inside raindrops.",
    (
        "Clouds are one of the biggest uncertainties in climate models, because some types reflect sunlight and cool "
        "the planet while others trap heat and warm it."
    ),
    # mathematics
    (
        "A proof by contradiction begins by assuming that the statement you want to prove is false and then shows that "
        "this assumption leads to something impossible."
    ),
    "Prove that there are infinitely many prime numbers.",
    "Let x be a positive integer such that x squared is less than 50.",
    (
        "If you flip a fair coin ten times, getting exactly five heads is the single most likely outcome, but it still "
        "happens less than a quarter of the time."
    ),
    "The derivative of sin x is cos x.",
    "Pi is irrational, so its decimal expansion never repeats.",
    "What's the probability of rolling two sixes in a row?",
    (
        "Calculus was developed independently by Newton and Leibniz in the late seventeenth century, and their "
        "supporters argued bitterly for decades about who had got there first."
    ),
    "Multiply both sides of the equation by three, then subtract seven.",
    (
        "The birthday problem shows that in a group of just twenty-three people, there is a better than even chance "
        "that two of them share a birthday."
    ),
    "The Fibonacci sequence begins 0, 1, 1, 2, 3, 5, 8, 13.",
    "Round your answer to two decimal places.",
    (
        "Group theory started as a way of studying the symmetries of polynomial equations and ended up being essential "
        "to chemistry, physics and cryptography."
    ),
    "Zero is neither positive nor negative.",
    "Euler's identity links five fundamental constants in a single, surprisingly simple equation.",
    "Geometry was my favourite subject at school.",
    "The mean of 4, 8 and 15 is 9.",
    (
        "To find the gradient of a straight line, divide the change in the vertical direction by the change in the "
        "horizontal direction between any two points."
    ),
    "Proof by induction works like a row of dominoes: show the first falls, and that each one knocks over the next.",
    "Statistics can be misleading when the sample size is small.",
    "A prime number has exactly two divisors.",
    "Solve for y: 3y + 4 = 19.",
    (
        "A good mathematical proof is not just correct; it explains why something is true in a way that makes you "
        "wonder how you ever doubted it."
    ),
    "Logarithms turn multiplication into addition.",
    "The square root of 144 is 12.",
    "Infinity is not a number but a concept.",
    "A vector has both magnitude and direction.",
    # engineering
    (
        "The original design called for a steel frame, but the engineers switched to laminated timber to reduce the "
        "building's carbon footprint and speed up construction."
    ),
    "Concrete is strong in compression but weak in tension, which is why it is reinforced with steel bars.",
    "The tolerance on this shaft is plus or minus 0.05 mm.",
    "Engineers inspected the dam after the earthquake.",
    (
        "Before the bridge opened, engineers drove forty loaded lorries onto the deck and measured how far it "
        "deflected, comparing the results with their computer predictions."
    ),
    "A heat exchanger transfers energy between two fluids without letting them mix.",
    "The new tunnel will cut journey times under the estuary by twenty minutes.",
    (
        "Most structural failures are not caused by a single dramatic mistake but by a series of small oversights that "
        "combine in a way nobody anticipated."
    ),
    "Why do skyscrapers sway in the wind?",
    "The prototype failed at roughly 80% of its design load.",
    "Solar panels lose a little efficiency every year.",
    (
        "The water treatment plant uses a combination of sand filters, ultraviolet light and a small dose of chlorine "
        "to make river water safe to drink."
    ),
    "Safety factors account for uncertainty in loads and materials.",
    "Each turbine generates enough electricity for about two thousand homes.",
    "Weld quality was checked with ultrasonic testing.",
    (
        "Designing a reliable system means assuming that every component will fail at some point and making sure the "
        "whole thing keeps working when it does."
    ),
    "The suspension bridge's main cables are made of thousands of parallel steel wires.",
    "Friction losses in the pipe increase with flow rate.",
    (
        "The engine was redesigned to run on hydrogen, which meant changing the fuel injectors, the seals and the way "
        "the combustion chamber is cooled."
    ),
    "Aluminium is lighter than steel but more expensive.",
    "A feedback controller compares the measured output with the set point and adjusts the input to reduce the error.",
    "The circuit board overheated during the stress test.",
    "Hydraulic systems can multiply force using incompressible fluid.",
    "The Victorians built sewers that are still in use today.",
    (
        "Civil engineers had to account for the soft clay beneath the site, so the foundations were driven more than "
        "thirty metres down to reach solid rock."
    ),
    # chemistry
    (
        "When you heat a hydrated copper sulfate crystal, the blue colour disappears as water is driven off, and it "
        "returns if you add a few drops of water again."
    ),
    "Add the acid to the water, never the other way round.",
    "Sodium reacts violently with water, producing hydrogen gas and a lot of heat.",
    (
        "The reaction is exothermic, so the flask should be cooled in an ice bath while the reagent is added slowly, "
        "one drop at a time, with constant stirring."
    ),
    "Noble gases rarely form compounds.",
    "What makes some reactions release heat while others absorb it?",
    "Catalysts speed up reactions without being used up.",
    "The pH of pure water at room temperature is 7.",
    (
        "Marie Curie was the first person to win Nobel Prizes in two different sciences, for her work on radioactivity "
        "and for discovering polonium and radium."
    ),
    "Carbon can form four bonds, which is why it is the backbone of so many different molecules.",
    (
        "Baking soda and vinegar fizz because the acid reacts with sodium bicarbonate to release carbon dioxide, the "
        "same gas that puts the bubbles in fizzy drinks."
    ),
    "Mendeleev left gaps in his periodic table for elements not yet discovered.",
    "Wear gloves and goggles when handling concentrated sulfuric acid.",
    (
        "Chromatography separates the components of a mixture according to how strongly each one is attracted to the "
        "paper compared with the solvent."
    ),
    "The lab smelled faintly of rotten eggs.",
    "Polymers are long chains of repeating units.",
    "Chlorophyll absorbs red and blue light and reflects green.",
    "Diamond and graphite are both pure carbon, but their atoms are arranged very differently.",
    (
        "All waste solvents must be collected in the labelled containers under the fume cupboard and must never be "
        "poured down the sink."
    ),
    "Titrate until the indicator just changes colour.",
    "Enzymes are biological catalysts made of protein.",
    "Oxidation is the loss of electrons; reduction is the gain.",
    "Soap molecules have one end that likes water and one end that likes grease.",
    (
        "Green chemistry aims to design processes that use fewer hazardous substances, produce less waste and consume "
        "less energy than traditional methods."
    ),
    "Ammonia is produced industrially using the Haber process.",
    # biology
    "Mitochondria produce most of the cell's energy.",
    "DNA is copied before a cell divides.",
    (
        "Every cell in your body carries roughly the same DNA, yet a skin cell and a nerve cell look and behave "
        "completely differently because they use different genes."
    ),
    "Some bacteria can survive in boiling hot springs.",
    "The human body contains roughly as many bacterial cells as human ones.",
    "Why do leaves change colour in autumn?",
    "Natural selection favours traits that help organisms survive and reproduce in a particular environment.",
    "Frogs absorb water through their skin.",
    (
        "Migrating birds use a combination of the sun, the stars, the Earth's magnetic field and familiar landmarks to "
        "find their way across thousands of kilometres."
    ),
    "Tardigrades can survive being frozen, dried out and even exposed to space.",
    "Neurons communicate using electrical and chemical signals.",
    (
        "When a forest is cut down, the loss goes far beyond the trees themselves, because countless insects, fungi, "
        "birds and mammals depend on that habitat to survive."
    ),
    "Genes are switched on and off depending on what the cell needs.",
    "A single oak tree can support hundreds of species of insects.",
    (
        "The immune system learns to recognise specific invaders, which is why a second infection with the same germ "
        "is usually much milder than the first."
    ),
    "The heart of a hummingbird can beat over a thousand times a minute.",
    "Photosynthesis converts light, water and carbon dioxide into sugar and oxygen.",
    "Viruses cannot reproduce without a host cell.",
    (
        "Researchers tagged two hundred sea turtles and found that many of them returned to the very beach where they "
        "had hatched decades earlier."
    ),
    "Red blood cells have no nucleus, which leaves more room for haemoglobin.",
    (
        "Some plants release chemical signals when they are attacked by caterpillars, attracting wasps that lay their "
        "eggs inside the caterpillars and kill them."
    ),
    "Evolution is a theory in the scientific sense: a well-tested explanation supported by a huge body of evidence.",
    "Plants grow towards light.",
    "The gut microbiome influences digestion, immunity and possibly mood.",
    "Octopuses have three hearts and blue blood.",
    (
        "A healthy pond contains a delicate balance of plants, algae, insects and fish, and too many nutrients can tip "
        "it into a murky, oxygen-starved state."
    ),
    # geography
    "The Nile flows north into the Mediterranean.",
    (
        "The Ganges rises in the Himalayas and flows more than 2,500 kilometres across northern India and Bangladesh "
        "before reaching the Bay of Bengal."
    ),
    "Iceland lies on the Mid-Atlantic Ridge, where two tectonic plates are slowly pulling apart.",
    "Canada has more lakes than the rest of the world combined.",
    (
        "Japan sits where four tectonic plates meet, which is why it experiences so many earthquakes and has more than "
        "a hundred active volcanoes."
    ),
    "Which country has the longest coastline?",
    "Most of Australia's population lives near the coast.",
    "The Amazon basin covers parts of nine countries.",
    "Rivers carve valleys into V shapes; glaciers carve them into U shapes.",
    (
        "Although Russia spans eleven time zones, most of its population lives in the western part of the country, "
        "close to Moscow and St Petersburg."
    ),
    "The Netherlands has reclaimed large areas of land from the sea.",
    "Istanbul straddles two continents.",
    "Oxbow lakes form when a river meander is cut off.",
    (
        "Deserts are defined by how little precipitation they receive rather than by temperature, so Antarctica counts "
        "as the largest desert in the world."
    ),
    "The Andes are the longest mountain range on land.",
    "Deltas form where rivers deposit sediment as they slow down on entering the sea.",
    (
        "The river floods every year, spreading rich silt across the plain, and for thousands of years farmers have "
        "planted their crops as soon as the water recedes."
    ),
    "Population density in Bangladesh is among the highest in the world.",
    (
        "Many of the world's fastest-growing cities are in sub-Saharan Africa and South Asia, where millions of people "
        "move from the countryside every year."
    ),
    "Map scale: 1 cm represents 2 km.",
    "The equator passes through Ecuador, Kenya and Indonesia, among others.",
    "Volcanic soils are often extremely fertile.",
    "Mongolia is the most sparsely populated country on Earth.",
    (
        "The border between the two countries follows the watershed along the mountain ridge, so every stream on one "
        "side flows west and every stream on the other flows east."
    ),
    "Fjords are flooded glacial valleys.",
    # religion and philosophy
    (
        "Descartes doubted everything he could until he reached one thing he could not doubt: that he was thinking, "
        "and therefore that he existed."
    ),
    "The monastery has stood on this hill for eight hundred years.",
    (
        "For many people, religion is less about believing particular doctrines and more about belonging to a "
        "community that marks births, marriages and deaths together."
    ),
    "Ramadan is a month of fasting from dawn until sunset.",
    (
        "The trolley problem asks whether it is right to divert a runaway tram so that it kills one person instead of "
        "five, and people's answers vary surprisingly."
    ),
    (
        "Most of the world's major religions include some version of the golden rule: treat others as you would want "
        "to be treated."
    ),
    "The temple bells rang at dawn.",
    "Is it possible to know anything for certain?",
    "Utilitarians judge actions by their consequences.",
    "The pilgrimage route crosses the Pyrenees and ends in Santiago.",
    (
        "Buddhism teaches that suffering arises from craving and attachment, and that it can be ended by following a "
        "path of ethical conduct, meditation and wisdom."
    ),
    "Diwali celebrates the victory of light over darkness.",
    "If a tree falls in a forest and no one hears it, does it make a sound?",
    "Kant argued that we should never treat people merely as a means to an end.",
    "Hume pointed out that no amount of observing what is the case can, on its own, tell us what ought to be the case.",
    "Meditation is central to many Buddhist traditions.",
    "Existentialists say we are condemned to be free.",
    "The cathedral took more than two centuries to complete.",
    (
        "The village church, the mosque on the high street and the small Sikh gurdwara all opened their doors to "
        "families who lost their homes in the floods."
    ),
    "Hymns were sung in Welsh at the funeral.",
    "Plato imagined prisoners in a cave mistaking shadows for reality.",
    "Faith and doubt often live side by side.",
    (
        "Aristotle believed that virtue is a habit, formed by practice, and that a brave person becomes brave by "
        "repeatedly doing brave things."
    ),
    "Easter falls on a different date each year.",
    "Philosophy begins in wonder.",
    # media and film
    "The film won three Oscars, including best director.",
    (
        "The film was shot entirely on location in a single Italian village, and many of the residents appear as "
        "extras in the market and wedding scenes."
    ),
    "The sequel is somehow even better than the original.",
    "Spoiler alert: the butler didn't do it.",
    (
        "Critics were divided over the remake, with some praising its bold new ending and others complaining that it "
        "missed everything that made the original special."
    ),
    "The documentary follows a family of farmers through one year in the Scottish Highlands.",
    (
        "Newspapers have struggled to replace the advertising money they lost to the internet, and many local titles "
        "have closed or merged over the past twenty years."
    ),
    "The podcast releases a new episode every Tuesday.",
    "Which newspaper broke the story first?",
    "Her performance in the final scene was devastating.",
    "The director's cut runs to almost four hours.",
    "Local radio is still the main source of news for many older listeners.",
    (
        "The actor spent four months learning to sail for the role, and the director insisted that all the storm "
        "sequences were filmed at sea rather than in a studio."
    ),
    "Subtitles are better than dubbing, and I will not be taking questions.",
    "The cinema was almost empty for the Tuesday matinee.",
    "A press conference is scheduled for 3pm.",
    (
        "A good documentary lets its subjects speak for themselves, rather than telling the audience what to think "
        "about them at every turn."
    ),
    "Black-and-white films from the 1940s still feel surprisingly modern in their dialogue.",
    "The soundtrack is better than the film.",
    "Reality TV contestants are often edited into villains.",
    (
        "The broadcaster apologised after a technical fault knocked the evening news off air for nearly twelve "
        "minutes, replacing it with a still image of a clock."
    ),
    "Journalists must protect their sources.",
    "That season finale left me shouting at the screen.",
    (
        "Some of the best-loved television comedies of all time were almost cancelled after their first series because "
        "the early ratings were so poor."
    ),
    "Now on BBC One, the evening news.",
    # literature and poetry
    "It was a dark and stormy night.",
    (
        "The novel opens with a woman stepping off a train in a town she has never visited, carrying a suitcase that "
        "does not belong to her."
    ),
    "Shakespeare invented or popularised hundreds of English words.",
    "The moon hung low like a lantern nobody had bothered to light.",
    "Who wrote Pride and Prejudice?",
    (
        "Reading a great book for the second time is a different experience, because you notice all the small clues "
        "the author planted along the way."
    ),
    "Poetry is what gets lost in translation, or so the saying goes.",
    "The old man and the sea kept their long, stubborn quarrel going until dawn.",
    (
        "She wrote her first novel in the evenings after work, at the kitchen table, over the course of six years, and "
        "it was rejected by twenty-three publishers."
    ),
    "I read the last chapter first.",
    "Autumn arrives in copper and smoke.",
    "The unreliable narrator keeps the reader guessing until the final page.",
    "Tolstoy rewrote War and Peace several times.",
    "Between the lines of her letters was everything she could not say out loud.",
    "Sonnets have fourteen lines.",
    "The library smelled of dust and old paper.",
    (
        "In the poem, the river becomes a kind of memory, carrying the speaker's childhood downstream and leaving only "
        "a few bright stones on the bank."
    ),
    "He keeps a notebook of overheard conversations for his stories.",
    "Gothic novels love crumbling castles and secret passages.",
    (
        "Science fiction is at its best when it uses an imagined future to ask sharp questions about the world we live "
        "in today."
    ),
    "The book club couldn't agree on whether the ending was hopeful.",
    (
        "The letters, published fifty years after his death, reveal a much warmer and funnier man than the stern "
        "figure who appears in his novels."
    ),
    "Metaphor lets us see one thing in terms of another.",
    "The hero's journey appears in myths from every continent.",
    (
        "Children's books are often read aloud hundreds of times, so the rhythm of every sentence matters as much as "
        "the story itself."
    ),
    # shopping and customer service
    (
        "I've been a loyal customer for over ten years, so I was disappointed to be told that the only solution was to "
        "wait another three weeks for a replacement."
    ),
    "Do you have this in a medium?",
    "I'd like a refund, please.",
    "We're sorry to hear that your item arrived damaged; please reply with a photo and your order number.",
    "Buy one, get one half price on all summer footwear.",
    (
        "If your parcel hasn't arrived within ten working days, please get in touch with our support team and we'll "
        "either send a new one or issue a full refund."
    ),
    "Can I return something without a receipt?",
    "Thank you for holding; your call is important to us.",
    "Free delivery on orders over £40.",
    (
        "The shop assistant noticed I was struggling to choose between two coats and told me honestly that the cheaper "
        "one was better made, which won my loyalty for life."
    ),
    "Unfortunately this item is out of stock, but we expect new supplies by the end of the month.",
    "Is there a student discount?",
    "Please keep your proof of purchase as it acts as your guarantee.",
    (
        "Returns are accepted within thirty days of purchase, provided the items are unworn, unwashed and in their "
        "original packaging with all tags still attached."
    ),
    "I've been waiting forty minutes to speak to someone about a simple billing error.",
    "All sale items are final and cannot be exchanged.",
    (
        "We have escalated your complaint to our senior customer relations team, who will contact you within five "
        "working days to discuss a resolution."
    ),
    "The price on the shelf didn't match the price at the till.",
    (
        "The new shopping centre has a cinema, a food court and a hundred and twenty shops, but half the units on the "
        "old high street now stand empty."
    ),
    "We've credited £15 to your account as a gesture of goodwill.",
    "The market stall sells honey from hives just outside town.",
    "Store hours: Mon-Sat 9:00-17:30, Sun 10:00-16:00.",
    (
        "Could you tell me whether this sofa can be delivered to a third-floor flat with no lift, and whether your "
        "team will carry it up the stairs?"
    ),
    # product descriptions
    (
        "This folding bike weighs just 11 kg and folds down in under twenty seconds, making it ideal for commuters who "
        "need to combine cycling with trains or buses."
    ),
    "This stainless steel water bottle keeps drinks cold for 24 hours and hot for 12.",
    "Hand-poured soy candle with notes of cedar, orange peel and clove.",
    "Includes two AA batteries.",
    (
        "The coffee is grown at high altitude on a single family farm in Colombia and has tasting notes of dark "
        "chocolate, red berries and brown sugar."
    ),
    "Dishwasher safe.",
    "The blender's 1200 W motor crushes ice in seconds.",
    "Made in Portugal from organic cotton, this throw is soft enough for a nursery and tough enough for a dog.",
    (
        "Our mattress has three layers of memory foam and a breathable cover that can be removed and washed, and it "
        "comes with a hundred-night trial."
    ),
    "Suitable for ages 3 and up; contains small parts.",
    "Our best-selling backpack now comes in four new colours.",
    (
        "Designed for long-distance hikers, the boots have a waterproof membrane, a grippy rubber sole and a padded "
        "collar that protects the ankle on rough ground."
    ),
    "Compact enough for a studio flat, powerful enough for a family home.",
    "Each mug is hand-thrown, so no two are exactly alike.",
    (
        "This children's puzzle has 48 chunky wooden pieces and a colourful picture of farm animals, perfect for "
        "little hands learning to match shapes and colours."
    ),
    "Warranty: two years parts and labour.",
    "Breathable mesh upper, cushioned sole and a heel tab for easy on and off.",
    "This garden hose expands to three times its length when the water is turned on.",
    (
        "The smart thermostat learns your routine over the first week and adjusts the heating automatically, so the "
        "house is warm when you get home and cool when you leave."
    ),
    # emails at work
    (
        "Hi Mark, thanks for sending this over; I've made a few changes to the second section, mainly to tighten the "
        "wording, but otherwise I think it's ready to go."
    ),
    "Please find attached the revised proposal.",
    "Could we move our call to Thursday afternoon?",
    "Thanks for your patience while we looked into this.",
    (
        "Please note that the office will be closed from 24 December to 2 January, and any urgent IT issues during "
        "that period should be reported to the on-call number."
    ),
    "Following up on my message from last week, did you get a chance to review the contract?",
    "Apologies for the late reply.",
    "As discussed in today's meeting, I've summarised the action points below.",
    (
        "I wanted to give you a heads-up that the client has asked to bring the presentation forward by a week, so "
        "we'll need the final figures by Wednesday."
    ),
    "Just to confirm, the deadline is the end of March, not the beginning.",
    "Let me know if you have any questions.",
    (
        "Could everyone please complete the annual compliance training by the end of the month; it takes about forty "
        "minutes and can be done in several sittings."
    ),
    "Great work on the launch, everyone!",
    "Per my last email, the invoice is now sixty days overdue.",
    "Can you send me the latest version of the slides before the board meeting?",
    (
        "Thanks again for taking the time to meet with us yesterday; we really enjoyed hearing about your plans and "
        "look forward to working together on the project."
    ),
    "Please don't reply-all to this message.",
    "We are pleased to welcome Daniel, who joins the finance team this week as a senior analyst.",
    "Happy to discuss further if helpful.",
    (
        "Just a reminder that the quarterly all-hands meeting is tomorrow at 2pm in the main hall, and lunch will be "
        "provided beforehand for anyone in the office."
    ),
    "Kind regards, Sarah.",
    # social media and chat
    (
        "honestly the best part of my week was finding a fiver in my winter coat pocket, which probably says a lot "
        "about my week"
    ),
    "Can't believe it's already December.",
    "omg the queue for the new café is insane",
    "Anyone know a good plumber in Bristol?",
    "new profile pic, who dis",
    (
        "Does anyone have recommendations for a quiet beach somewhere in Portugal that isn't packed with tourists in "
        "August? Asking for a very tired family of five."
    ),
    "brb getting snacks",
    "Thread: ten things I wish I'd known before moving abroad.",
    "ngl that ending made no sense",
    (
        "just spent two hours assembling a wardrobe and there are four screws left over, so if it collapses tonight "
        "you'll know why"
    ),
    (
        "Update for everyone who asked: the dog is home from the vet, she's fine, and she's already eaten a sock to "
        "celebrate."
    ),
    "tbh I'd rather stay in tonight",
    "Quick poll: pineapple on pizza, yes or no?",
    "Happy birthday mate, have a good one!",
    "This is the content I signed up for.",
    "hmu if you're free this weekend",
    "Five years ago today I quit my job and started my own business, and I haven't regretted it once.",
    (
        "Not to be dramatic, but if the coffee machine at work breaks one more time I am going to have to start a "
        "petition."
    ),
    "Can we all agree that Mondays should be optional?",
    "Throwback to the best holiday ever.",
    "idk, maybe? depends what time it finishes",
    "Ok but why is nobody talking about this",
    (
        "Can't stop thinking about that tiny bookshop we found in Edinburgh, the one with the ladder and the owner who "
        "knew every single book on the shelves."
    ),
    # children's stories
    (
        "Once there was a lighthouse who was lonely, because all the ships sailed past in the night and never stopped "
        "to say hello."
    ),
    "The dragon was very small and very, very shy.",
    '"Who\'s that knocking on my door?" asked the old goat.',
    "Every night the moon peeked through Lily's window to say goodnight.",
    (
        "The little hedgehog packed a sandwich, a torch and his favourite blanket, and set off into the big dark wood "
        "to find where the stars go in the daytime."
    ),
    "Milo found a tiny door at the bottom of the garden wall.",
    "The giant sneezed, and all the leaves fell off the trees.",
    '"I\'m not scared," said the mouse, who was a little bit scared.',
    (
        "Every morning the baker's daughter left a cake on the windowsill, and every morning it was gone, until one "
        "day she stayed up to see who was taking it."
    ),
    "The princess rescued herself and then went home for tea.",
    "Up, up, up went the red balloon, over the rooftops and far away.",
    "The little train puffed and puffed until it reached the top of the hill.",
    (
        "Grandma said that if you whisper a wish into a seashell and throw it back into the sea, the waves will carry "
        "it to someone who can make it come true."
    ),
    "The friendly monster only ate socks.",
    "And they all lived happily ever after, more or less.",
    '"Let\'s build a rocket out of boxes," said Ava, and so they did.',
    "The snowman waved goodbye as the sun came out.",
    (
        "The three little goats trip-trapped over the bridge, and the troll underneath grumbled that nobody ever "
        "brought him anything nice for breakfast."
    ),
    "One, two, three little ducks went swimming in the pond.",
    "The wizard's hat was full of stars, and one of them had fallen out.",
    'The owl said, "Hoo are you?" and the rabbit giggled.',
    (
        "When the rain stopped, Poppy put on her yellow wellies and jumped in every single puddle between her house "
        "and the park, even the very deep one."
    ),
    # jokes and wordplay
    (
        "A man tells his doctor that he broke his arm in two places, and the doctor tells him to stop going to those "
        "places."
    ),
    "I'm reading a book about anti-gravity; it's impossible to put down.",
    "What do you call a fish with no eyes? A fsh.",
    "Knock knock. Who's there? Lettuce. Lettuce who? Lettuce in, it's freezing out here!",
    "I used to be a banker, but I lost interest.",
    (
        "My friend said he didn't understand cloning, so I told him that made two of us, and he didn't find it nearly "
        "as funny as I did."
    ),
    "Parallel lines have so much in common. It's a shame they'll never meet.",
    "My wife told me to stop impersonating a flamingo, so I had to put my foot down.",
    "Why don't skeletons fight each other? They don't have the guts.",
    "I told my computer a joke, but it didn't get it.",
    "What's brown and sticky? A stick.",
    "The past, the present and the future walked into a bar. It was tense.",
    (
        "I asked the librarian if they had any books on paranoia, and she leaned over and whispered, \"They're right "
        'behind you."'
    ),
    "Never trust atoms, they make up everything.",
    "Did you hear about the claustrophobic astronaut? He just needed a bit of space.",
    "Why was the maths book sad? It had too many problems.",
    "I would tell you a joke about construction, but I'm still working on it.",
    'A horse walks into a bar. The barman says, "Why the long face?"',
    "I bought some shoes from a drug dealer; I don't know what he laced them with, but I've been tripping all day.",
    # agriculture and farming
    (
        "After three dry summers in a row, many farmers in the region have switched from maize to sorghum, which needs "
        "far less water and copes better with heat."
    ),
    "The farmer rotates wheat, beans and oilseed rape to keep the soil healthy.",
    "Lambing season means very little sleep for a fortnight.",
    "Dairy cows are usually milked twice a day.",
    "Organic farms avoid synthetic pesticides and fertilisers.",
    (
        "The dairy farm converts manure into biogas, which powers the milking parlour and heats the farmhouse, and the "
        "leftover material is spread on the fields as fertiliser."
    ),
    "Drip irrigation delivers water directly to the roots and can cut water use by half.",
    "Hedgerows provide shelter for birds, insects and small mammals between fields.",
    (
        "Young people are leaving the countryside for the cities, and the average age of farmers in the area is now "
        "over sixty, which worries everyone about the future."
    ),
    "Tractors with GPS can plant seed rows accurate to within a couple of centimetres.",
    (
        "Apple growers rely on bees for pollination, so many of them rent hives from beekeepers for a few weeks each "
        "spring while the orchards are in blossom."
    ),
    "Free-range hens must have access to outdoor space during daylight hours.",
    "The vineyard picks its grapes by hand in late September.",
    (
        "In the terraced fields of the highlands, families have grown rice on the same steep hillsides for more than "
        "two thousand years, maintaining the walls by hand."
    ),
    "Pig prices have fallen to their lowest level for a decade.",
    "Rice paddies are flooded to suppress weeds.",
    "Most of the world's cocoa is grown by smallholders in West Africa.",
    (
        "Vertical farms grow lettuce and herbs indoors under LED lights, using a fraction of the land and water needed "
        "by a conventional farm, though energy costs are high."
    ),
    "Soil is a living system, not just dirt that holds plants up.",
    "Farmers' markets let growers sell directly to the people who eat their food.",
    (
        "The cattle are brought down from the high pastures in autumn, decorated with flowers and bells, and the whole "
        "village turns out to watch the procession."
    ),
    # the sea
    (
        "The fishing fleet left harbour before dawn, their lights strung out across the dark water like a necklace, "
        "and would not return for another four days."
    ),
    "Waves crashed against the harbour wall all night.",
    "Around seventy percent of the Earth's surface is covered by ocean.",
    "The lifeboat was launched at 3:40am to reach a fishing vessel in difficulty.",
    (
        "Ocean currents act like a giant conveyor belt, carrying warm water from the tropics towards the poles and "
        "bringing cold, nutrient-rich water back the other way."
    ),
    "Whales sing songs that can travel hundreds of kilometres underwater.",
    "Salt spray had rusted every hinge on the beach huts.",
    "Why is the sea salty?",
    (
        "When the tide is out, you can walk across the sand to the island, but you need to check the tide tables "
        "carefully or you'll be stranded for hours."
    ),
    "Plastic waste collects in huge swirling patches in the middle of the Pacific.",
    "We spotted dolphins off the bow just after leaving port.",
    (
        "Marine biologists were astonished to find a species of octopus that gathers in groups of several hundred "
        "around warm springs on the ocean floor."
    ),
    "The trawler returned with its hold full of mackerel.",
    "Sailors once navigated using only the stars, a compass and a careful reckoning of speed and time.",
    (
        "The old sailors' superstitions included never whistling on deck, never setting sail on a Friday and never, "
        "ever bringing a banana on board."
    ),
    "The ocean absorbs a large share of the carbon dioxide we emit.",
    "Smooth seas never made a skilled sailor.",
    "The ferry rolled so much that even the crew looked pale.",
    (
        "Coral bleaching happens when water temperatures stay too high for too long and the corals expel the algae "
        "that give them both their colour and most of their food."
    ),
    "The beach was covered in seaweed after the storm.",
    "Kelp forests can grow up to half a metre a day.",
    (
        "The container ship ran aground in the narrow channel, blocking traffic for six days and holding up billions "
        "of pounds' worth of goods on both sides."
    ),
    # crime and justice
    (
        "The court heard that the defendant had used a network of fake companies to move more than £3 million out of "
        "the country over a period of five years."
    ),
    "The defendant pleaded not guilty to all charges.",
    "A man has been arrested on suspicion of fraud.",
    (
        "Police are increasingly working with mental health nurses, because many of the calls they receive involve "
        "people in crisis rather than criminal behaviour."
    ),
    "Detectives believe the thieves knew exactly where the safe was hidden.",
    "He was sentenced to four years in prison and banned from driving for ten.",
    (
        "After spending seventeen years in prison for a crime he did not commit, he was released when new DNA evidence "
        "pointed to another man entirely."
    ),
    "Anyone with information should call the incident line, quoting reference 2207.",
    (
        "Victims of online fraud are often too embarrassed to report what happened, which means the true scale of the "
        "problem is almost certainly much larger than official figures suggest."
    ),
    "The case collapsed when a key witness refused to give evidence.",
    (
        "The judge said that the sentence reflected the defendant's early guilty plea and genuine remorse, but warned "
        "that any further offence would lead to immediate custody."
    ),
    "The stolen painting was recovered from a lock-up garage in Essex.",
    "Innocent until proven guilty is a principle, not a formality.",
    (
        "Neighbourhood watch schemes are less about catching criminals and more about neighbours keeping an eye on "
        "each other's homes and getting to know one another."
    ),
    "The prosecution must prove its case beyond reasonable doubt.",
    (
        "Forensic accountants spent months tracing the payments through dozens of bank accounts before they could show "
        "where the money had actually gone."
    ),
    # space science
    (
        "The James Webb Space Telescope observes mainly in infrared light, which allows it to see through clouds of "
        "dust and detect galaxies formed soon after the Big Bang."
    ),
    "A light year is a measure of distance, not time.",
    (
        "Stars like our Sun spend most of their lives fusing hydrogen into helium in their cores, and will eventually "
        "swell into red giants before shrinking into white dwarfs."
    ),
    "The International Space Station orbits the Earth roughly every ninety minutes.",
    (
        "Astronomers discovered that the expansion of the universe is speeding up, not slowing down, and nobody yet "
        "fully understands the dark energy that seems to be driving it."
    ),
    "How do astronomers measure the distance to faraway galaxies?",
    (
        "On a clear night far from city lights, you can see around two and a half thousand stars with the naked eye, "
        "as well as the faint band of the Milky Way."
    ),
    "The Andromeda galaxy is on a slow collision course with the Milky Way.",
    (
        "The Moon is slowly moving away from the Earth by about four centimetres a year, and days on Earth are getting "
        "very slightly longer as a result."
    ),
    "A total solar eclipse lasts only a few minutes at any given spot.",
    "The universe is about 13.8 billion years old.",
    "Jupiter has more than ninety known moons.",
    (
        "Comets are icy leftovers from the formation of the solar system, and when one approaches the Sun, its ice "
        "vaporises to form a glowing tail millions of kilometres long."
    ),
    "Astronauts lose bone density during long stays in microgravity.",
    "The telescope's mirror is 6.5 metres across.",
    (
        "Gravitational waves, ripples in spacetime predicted by Einstein a century earlier, were detected for the "
        "first time in 2015 from two black holes colliding."
    ),
    # music theory
    (
        "The dominant seventh chord contains a tritone, an interval so unstable that it almost demands to resolve, "
        "which is why it leads so naturally back to the tonic."
    ),
    "The time signature 3/4 gives three crotchet beats in every bar.",
    (
        "Most Western music uses equal temperament, in which the octave is divided into twelve identical semitones, so "
        "that a piece sounds equally in tune in every key."
    ),
    "What's the difference between a key and a scale?",
    (
        "A pentatonic scale has only five notes per octave, and because it avoids the most dissonant intervals, almost "
        "any combination of its notes sounds pleasant together."
    ),
    "Syncopation places the accent on a beat you don't expect.",
    "An octave doubles the frequency of a note.",
    "The piece modulates from C major to A minor in the bridge.",
    (
        "The song feels restless because the melody keeps landing on the second degree of the scale instead of the "
        "tonic, delaying resolution until the very last bar."
    ),
    "Tempo markings like allegro and adagio come from Italian.",
    "Blues songs often follow a twelve-bar chord progression.",
    "Dissonance creates tension that the ear wants resolved.",
    (
        "In a fugue, a short theme called the subject is introduced by one voice and then taken up by each of the "
        "others in turn, often at a different pitch."
    ),
    "A fermata tells the performer to hold the note for longer than written.",
    (
        "Jazz musicians often replace simple chords with richer extended harmonies, adding ninths, elevenths and "
        "thirteenths to give familiar progressions a new colour."
    ),
    # programming
    (
        "Before you spend a day optimising that function, profile the program first, because the slow part is very "
        "rarely where you expect it to be."
    ),
    "Always write a failing test before you fix the bug.",
    "Merge conflict in main.rs, lines 40 to 58.",
    (
        "The service crashed under load because every request opened a new database connection and never closed it, so "
        "the pool ran out within minutes."
    ),
    "Use a hash map when you need fast lookups by key.",
    "The build fails on Windows because of a hard-coded path separator.",
    (
        "A good commit message explains what changed and why, so that someone reading the history a year from now can "
        "understand the decision without asking you."
    ),
    "Premature optimisation is the root of a lot of unnecessary complexity.",
    "This pull request refactors the parser and adds tests for empty input.",
    "Segmentation fault (core dumped).",
    (
        "Immutable data structures make concurrent code much easier to reason about, because no thread can change a "
        "value while another thread is reading it."
    ),
    "The API returns a 429 status code when you exceed the rate limit.",
    (
        "The bug only appeared on the first day of each month, and it took us a week to discover that a date "
        "calculation was treating January as month zero."
    ),
    "Off-by-one errors are the most common bug in array indexing.",
    (
        "Code review is not just about catching mistakes; it is also the main way knowledge about the system spreads "
        "from one developer to the rest of the team."
    ),
    "We migrated the database to PostgreSQL over the weekend.",
    "Git rebase rewrites history, so never rebase a branch that others are working on.",
    (
        "When an error message says the file cannot be found, check the working directory first, because relative "
        "paths are resolved from wherever the program was started."
    ),
    # news headlines
    "Council approves plans for new riverside park.",
    "Heatwave sparks record demand for ice cream.",
    "Hospital waiting lists reach all-time high.",
    "Local teenager wins national chess championship.",
    (
        "Thousands of people lined the streets of the capital on Saturday to watch the parade, which marked the "
        "centenary of the city's famous football club."
    ),
    "Scientists discover new species of frog in Andean cloud forest.",
    "Village post office saved by community buy-out.",
    "Firefighters tackle blaze at disused warehouse.",
    "Prime minister faces backlash over leaked memo.",
    (
        "Residents of a coastal village have been told to prepare for evacuation after cliffs collapsed overnight, "
        "leaving three houses just metres from the edge."
    ),
    "Airport expansion plans delayed by legal challenge.",
    "Water bills set to rise by an average of 8% from April.",
    "Football club appoints first female chief executive.",
    (
        "The country's largest supermarket chain has announced that it will scrap plastic bags entirely by the end of "
        "the year, following a successful trial in forty stores."
    ),
    # reviews
    (
        "I was sceptical about a vegan tasting menu, but every course was inventive and full of flavour, and I didn't "
        "miss meat for a single moment of the evening."
    ),
    "Absolutely terrible. The room smelled of damp and the shower didn't work.",
    (
        "The hotel's location couldn't be better, right next to the old town, but the walls are so thin that we could "
        "hear every word of the couple next door's argument."
    ),
    "The plot drags in the middle, but the last fifty pages are superb.",
    "Would not recommend.",
    (
        "The first half of the novel is slow and a little confusing, but stick with it, because the second half pulls "
        "every thread together in a way that is genuinely moving."
    ),
    "The hotel was fine, nothing special, but the breakfast was outstanding.",
    "It broke after two uses.",
    (
        "This vacuum cleaner is powerful and easy to empty, but the battery only lasts about twenty minutes, which "
        "isn't quite enough for a house with three floors."
    ),
    "A bold, ambitious album that doesn't quite hang together.",
    (
        "We booked the cooking class as a birthday present for my mum, and the chef was so warm and funny that we "
        "ended up staying an hour after it finished."
    ),
    "The app is clunky and crashes every time I try to upload a photo.",
    (
        "Great sound quality and comfortable for long periods, but the touch controls are far too sensitive and pause "
        "the music every time I adjust my hair."
    ),
    # dialogue
    (
        '"I know it\'s late," she said, holding out a slightly squashed box of chocolates, "but I couldn\'t let your '
        'birthday go by without at least saying happy birthday."'
    ),
    '"I\'ll be there in five minutes," he said, which meant twenty.',
    (
        '"If you\'re going to keep borrowing my car," said Dad, "the least you can do is put some petrol in it and '
        'take the crisp packets out."'
    ),
    '"Morning," said the postman. "Lovely day for it."',
    '"Sorry, what did you say your name was again?"',
    (
        "\"We've been walking for three hours,\" he said, \"and I'm starting to think that your shortcut isn't "
        'actually a shortcut at all."'
    ),
    '"Table for two?" "Actually, three; one more is on the way."',
    (
        '"The thing about this town," the old man said, leaning on the bar, "is that everyone knows your business '
        'before you do."'
    ),
    '"How was your day?" "Long. Don\'t ask."',
    '"Is this seat taken?" "No, go ahead."',
    '"Can I help you?" asked the shopkeeper, looking at me over her glasses.',
    (
        '"Right, listen carefully," said the coach, "because I\'m only going to say this once, and then I want to see '
        'you all running."'
    ),
)
