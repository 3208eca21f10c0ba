# Publishes what a careless or hostile publisher might: messages Herald must refuse.
#
#   ruby bunny_poison.rb AMQP_URL EXCHANGE
#
# To the durable topic EXCHANGE, routing key employee.created, with publisher
# confirms: an invalid CloudEvents time, forged attempt numbers (negative, zero,
# not a number) and one good message; then prints "CONFIRMED".
require "bunny"
require "json"

url, exchange_name = ARGV
connection = Bunny.new(url, logger: Logger.new(nil))
connection.start
channel = connection.create_channel
channel.confirm_select
exchange = channel.topic(exchange_name, durable: true)

body = JSON.generate({ "guid" => "g-poison", "name" => "Eve" })
poison = [
  ["bad-time", { "cloudEvents_time" => "yesterday-ish" }],
  ["negative-attempt", { "herald-attempt" => -1_000_000_000 }],
  ["zero-attempt", { "herald-attempt" => 0 }],
  ["text-attempt", { "herald-attempt" => "many" }],
]
poison.each do |id, headers|
  exchange.publish(body, routing_key: "employee.created", content_type: "application/json",
                         persistent: true, message_id: id, headers: headers)
end
exchange.publish(JSON.generate({ "guid" => "g-good", "name" => "Ada" }),
                 routing_key: "employee.created", content_type: "application/json",
                 persistent: true, message_id: "good")
raise "publish not confirmed" unless channel.wait_for_confirms

puts "CONFIRMED"
connection.close
