# Publishes like Active Publisher does: plain Bunny, persistent, no CloudEvents headers.
#
#   ruby bunny_publish.rb AMQP_URL EXCHANGE
#
# Sends a JSON employee.created and a binary application/protobuf document.uploaded
# to the durable topic EXCHANGE with publisher confirms, then prints "CONFIRMED".
require "bunny"
require "json"

url, exchange_name = ARGV
connection = Bunny.new(url, logger: Logger.new(nil))
connection.start
channel = connection.create_channel
channel.confirm_select
exchange = channel.topic(exchange_name, durable: true)

exchange.publish(
  JSON.generate({ "guid" => "g-ruby-1", "name" => "Ada" }),
  routing_key: "employee.created",
  content_type: "application/json",
  persistent: true,
)
exchange.publish(
  [0x0a, 0x07, "g-ruby-2", 0x10, 0x96, 0x01].pack("CCa*CCC"),
  routing_key: "document.uploaded",
  content_type: "application/protobuf",
  persistent: true,
)
raise "publish not confirmed" unless channel.wait_for_confirms

puts "CONFIRMED"
connection.close
